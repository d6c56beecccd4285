"""The speed model of speculative decoding with a draft model for a target too large to run here
(EXAONE-4.0-32B: 64 layers), from step costs measured on a few-layer checkpoint of its shape.

A forward of n positions after a --context prompt is timed with all of the checkpoint's layers and
with none (embedding, final norm and lm_head with every position's logits, as a verification needs);
their difference over the layer count is one layer's cost, so a --full-layers model's step is
    T(n) = T_0(n) + full_layers * (T_L(n) - T_0(n)) / L.
The draft model's one-token step T_d is timed the same way. A round of k greedy guesses, each kept
with probability a, gives 1 + a + ... + a^k tokens for k * T_d + T(k + 1); the speed-up over plain
decoding (T(1) per token) is printed for the best k at each a.

    python tools/speed_model_speculative.py TARGET_FEW_LAYERS DRAFT [--full-layers 64] [--context 512]
        [--rounds 5] [--threads 2]"""
from __future__ import annotations

import argparse
import time

import numpy as np

import exaone_cpu


def step_costs(model, sizes, context: int, rounds: int) -> dict[int, float]:
    """Median seconds of a forward of n positions (every position's logits when n > 1) after context."""
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    cache = model.new_cache()
    model.forward(rng.integers(0, vocab, context), cache)
    runs: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(rounds + 1):
        for n in sizes:
            ids = rng.integers(0, vocab, n)
            t = time.perf_counter()
            model.forward(ids, cache, all_logits=n > 1)
            if r:
                runs[n].append(time.perf_counter() - t)
            cache.truncate(context)
    return {n: float(np.median(v)) for n, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("draft")
    ap.add_argument("--full-layers", type=int, default=64)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sizes = list(range(1, 10))
    target = exaone_cpu.load(args.target, threads=args.threads)
    layers = len(target.layers)
    with_layers = step_costs(target, sizes, args.context, args.rounds)
    all_layers, target.layers = target.layers, []
    head_only = step_costs(target, sizes, args.context, args.rounds)
    target.layers = all_layers
    del target
    full = {n: head_only[n] + args.full_layers * (with_layers[n] - head_only[n]) / layers for n in sizes}
    draft = exaone_cpu.load(args.draft, threads=args.threads)
    t_draft = step_costs(draft, [1], args.context, args.rounds)[1]
    print(f"kernels {exaone_cpu.isa()}, {args.threads} threads, context {args.context}, medians of {args.rounds}")
    print(f"{args.target}: {layers} layers; head only T_0(1) {head_only[1] * 1e3:.1f} ms, one layer "
          f"{(with_layers[1] - head_only[1]) / layers * 1e3:.1f} ms")
    print(f"modelled {args.full_layers}-layer step T(n), ms, and relative to T(1):")
    print("  " + "  ".join(f"n={n}: {full[n] * 1e3:.0f} ({full[n] / full[1]:.2f}x)" for n in (1, 2, 4, 8, 9)))
    print(f"draft {args.draft}: one-token step {t_draft * 1e3:.1f} ms ({t_draft / full[1]:.3f} of the target's)")
    print("acceptance per guess -> best k, tokens per round, speed-up over plain decoding")
    for a in (0.5, 0.6, 0.7, 0.8, 0.9):
        best = max(((k, (1 - a ** (k + 1)) / (1 - a) * full[1] / (k * t_draft + full[k + 1])) for k in range(1, 9)),
                   key=lambda x: x[1])
        k = best[0]
        print(f"  a={a:.1f}: k={k}, {(1 - a ** (k + 1)) / (1 - a):.2f} tokens, {best[1]:.2f}x")


if __name__ == "__main__":
    main()
