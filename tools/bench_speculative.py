"""End-to-end decode speed with speculative decoding, through the public API (Model.generate's
TokenStream), against plain decoding, side by side: medians of --repeat interleaved runs.

Modes (--modes, comma-separated):
    plain           no speculation (the reference for every ratio)
    prompt-lookup   the real prompt-lookup drafter
    draft           --draft MODEL drafting (a draft model with the same tokenizer)
    oracle-Q        a drafter that knows plain decoding's output and gets each guess right with
                    probability Q (e.g. oracle-1.0, oracle-0.6, oracle-0.0): the speed at a given
                    acceptance on any model, random weights included
    fixed-K         oracle-1.0 with adaptive off and K guesses per round (the verification cost)

The prompt is --prompt random tokens (or --text FILE as bytes, for the byte-level tiny-trained
fixture), --copy N of its tokens repeated at its end (the answer then tends to quote it). Greedy.

    python tools/bench_speculative.py MODEL [--prompt 256] [--gen 128] [--repeat 3] [--threads 2]
        [--modes plain,prompt-lookup,oracle-1.0,oracle-0.6,oracle-0.0] [--draft MODEL] [--text FILE]"""
from __future__ import annotations

import argparse
import time

import numpy as np

import exaone_cpu
from exaone_cpu.decoding import TokenStream
from exaone_cpu.speculative import Speculative, speculative_config


class Oracle:
    def __init__(self, truth: list[int], right: float, vocab: int, seed: int):
        self.truth, self.right, self.vocab = truth, right, vocab
        self.rng = np.random.default_rng(seed)

    def propose(self, token_ids: np.ndarray, k: int) -> np.ndarray:
        n = len(token_ids)
        guess = np.array((self.truth + [0] * k)[n : n + k], np.int64)
        wrong = self.rng.random(k) >= self.right
        guess[wrong] = (guess[wrong] + 1) % self.vocab
        return guess


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--copy", type=int, default=0, help="repeat this many prompt tokens at its end")
    ap.add_argument("--text", default=None, help="a file whose bytes are the prompt (byte-level fixtures)")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="plain,prompt-lookup,oracle-1.0,oracle-0.6,oracle-0.0")
    ap.add_argument("--draft", default=None)
    ap.add_argument("--kv-dtype", default="f32")
    args = ap.parse_args()
    model = exaone_cpu.load(args.model, threads=args.threads, kv_dtype=args.kv_dtype)
    vocab = model.config.vocab_size
    if args.text:
        prompt = np.frombuffer(open(args.text, "rb").read()[: args.prompt], np.uint8).astype(np.int64)
    else:
        prompt = np.random.default_rng(0).integers(0, vocab, args.prompt)
    if args.copy:
        prompt = np.concatenate([prompt, prompt[: args.copy]])
    draft = exaone_cpu.load(args.draft, threads=args.threads, kv_dtype=args.kv_dtype) if args.draft else None
    truth = prompt.tolist() + model.generate(prompt, args.gen, stop_at_eos=False)
    modes = args.modes.split(",")

    def spec_for(mode: str, seed: int):
        if mode == "plain":
            return None
        if mode == "prompt-lookup":
            return speculative_config("prompt-lookup")
        if mode == "draft":
            return speculative_config(draft, model)
        if mode.startswith("oracle-"):
            q = float(mode.split("-")[1])
            return Speculative(drafter=lambda: Oracle(truth, q, vocab, seed))
        if mode.startswith("fixed-"):
            k = int(mode.split("-")[1])
            return Speculative(drafter=lambda: Oracle(truth, 1.0, vocab, seed), num_tokens=k, adaptive=False)
        raise SystemExit(f"unknown mode {mode}")

    results: dict[str, list[tuple[float, int, int, int]]] = {m: [] for m in modes}
    for r in range(args.repeat + 1):  # the first round warms up
        for mode in modes:
            stream = TokenStream(model, prompt, max_new_tokens=args.gen, stop_token_ids=(), speculative=spec_for(mode, r))
            tokens = list(stream)
            assert tokens == truth[len(prompt):], f"{mode}: the tokens differ from plain decoding"
            rate = (len(tokens) - 1) / stream.decode_seconds
            rounds = 0 if stream.speculator is None else stream.speculator.rounds
            if r:
                results[mode].append((rate, stream.draft_tokens, stream.accepted_draft_tokens, rounds))
    base = float(np.median([x[0] for x in results["plain"]])) if "plain" in results else None
    print(f"{args.model}: kernels {exaone_cpu.isa()}, {args.threads} threads, prompt {len(prompt)}, "
          f"{args.gen} new tokens, median of {args.repeat}")
    print(f"{'mode':>14} {'tok/s':>8} {'ratio':>6} {'drafted':>8} {'kept':>6} {'accept':>7} {'rounds':>7}")
    for mode in modes:
        rate = float(np.median([x[0] for x in results[mode]]))
        drafted, kept, rounds = (int(np.median([x[i] for x in results[mode]])) for i in (1, 2, 3))
        ratio = f"{rate / base:.2f}x" if base else "-"
        accept = f"{kept / drafted:.0%}" if drafted else "-"
        print(f"{mode:>14} {rate:8.1f} {ratio:>6} {drafted:8d} {kept:6d} {accept:>7} {rounds:7d}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
