#!/usr/bin/env python3
"""Per-layer cost of a (partial) model, by layer type, and the whole model's speed extrapolated.

Made for the 32B shape, which does not fit this machine: a partial checkpoint of its first layers
(tools/make_random_model.py --shape 32b --layers 4: three sliding-window layers and one global)
is loaded, a prompt is prefilled and tokens are decoded through the public Model.forward, and
every decoder layer's call is timed. The full model's step is then the measured rest (embedding,
final norm, lm_head) plus the median layer time of each type times the number of layers of that
type in the full model (--full-layers and --pattern, default EXAONE-4.0-32B's 64 layers in LLLG:
48 sliding, 16 global).

    python tools/bench_layers.py MODEL [--quant int4] [--prompt 512] [--gen 16] [--context 0,4096]
                                       [--threads 2] [--rounds 3]

--context lists the cache lengths decode is measured after (a sliding layer reads at most its window
of keys, a global layer all of them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np

import exaone_cpu


def full_counts(full_layers: int, pattern: str) -> dict[str, int]:
    """Layers of each type in the full model: the partial model's pattern ("LLLG") repeated."""
    kinds = ["global" if c == "G" else "sliding" for c in pattern]
    counts = defaultdict(int)
    for i in range(full_layers):
        counts[kinds[i % len(kinds)]] += 1
    return dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--quant", default=None, help="quantize at load (int8 / int4); default as stored")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--context", default="0", help="cache lengths to decode after, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--full-layers", type=int, default=64, help="layers of the full model (default 64, the 32B)")
    ap.add_argument("--pattern", default="LLLG", help="layer pattern of the full model (default LLLG)")
    ap.add_argument("--kv-dtype", default="f32")
    args = ap.parse_args()

    t = time.perf_counter()
    model = exaone_cpu.load(args.model, threads=args.threads, quant=args.quant, kv_dtype=args.kv_dtype)
    load_s = time.perf_counter() - t
    c = model.config
    kind = ["sliding" if c.window(i) is not None else "global" for i in range(c.num_hidden_layers)]
    spent: dict[int, float] = defaultdict(float)
    inner = model.decoder_layer

    def timed(i, layer, h, positions, caches):
        t0 = time.perf_counter()
        inner(i, layer, h, positions, caches)
        spent[i] += time.perf_counter() - t0

    model.decoder_layer = timed
    rng = np.random.default_rng(0)
    contexts = [int(x) for x in args.context.split(",")]
    results = []  # (phase, tokens, total step s, {layer: s})
    for _ in range(args.rounds):
        prompt = rng.integers(100, c.vocab_size - 100, args.prompt)
        cache = model.new_cache(args.prompt + max(contexts) + args.gen)
        spent.clear()
        t0 = time.perf_counter()
        tok = int(np.argmax(model.forward(prompt, cache)))
        results.append((f"prefill {args.prompt}", args.prompt, time.perf_counter() - t0, dict(spent)))
        for ctx in contexts:
            if ctx > cache.length:  # fill the cache up to ctx (not timed)
                model.forward(rng.integers(100, c.vocab_size - 100, ctx - cache.length), cache)
            elif ctx and ctx < cache.length:
                continue
            spent.clear()
            t0 = time.perf_counter()
            for _ in range(args.gen):
                tok = int(np.argmax(model.forward([tok], cache)))
            results.append((f"decode @{ctx or args.prompt}", args.gen, time.perf_counter() - t0, dict(spent)))

    counts = full_counts(args.full_layers, args.pattern)
    print(f"model {args.model} ({c.num_hidden_layers} layers: {', '.join(kind)}), quant {args.quant}, "
          f"KV {args.kv_dtype}, {args.threads} threads, isa {exaone_cpu.isa()}, load {load_s:.1f} s; "
          f"medians of {args.rounds} rounds")
    print(f"full model: {counts} layers")
    print("| phase | sliding layer ms/token | global layer ms/token | rest ms/token | partial model tok/s | "
          "full model ms/token (extrapolated) | full model tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for phase in dict.fromkeys(r[0] for r in results):
        rows = [r for r in results if r[0] == phase]
        n = rows[0][1]
        per_kind = {}
        for k in ("sliding", "global"):
            idx = [i for i in range(c.num_hidden_layers) if kind[i] == k]
            per_kind[k] = statistics.median(
                statistics.median(r[3].get(i, 0.0) for i in idx) for r in rows) * 1e3 / n if idx else float("nan")
        rest = statistics.median((r[2] - sum(r[3].values())) for r in rows) * 1e3 / n
        total = statistics.median(r[2] for r in rows) * 1e3 / n
        full = rest + sum(counts.get(k, 0) * v for k, v in per_kind.items() if v == v)
        print(f"| {phase} | {per_kind['sliding']:.2f} | {per_kind['global']:.2f} | {rest:.2f} | {1e3 / total:.2f} | "
              f"{full:.1f} | {1e3 / full:.2f} |")


if __name__ == "__main__":
    main()
