#!/usr/bin/env python3
"""Decode speed after a long context with each KV cache type (f32, f16, int8), side by side.

One model is loaded once; for each cache type a prompt of --context random tokens is prefilled into
its own cache, then rounds of --gen greedy decode steps run on every cache in turn (each round
truncates back to the context first), so the types are compared under the same machine state.
Medians over the rounds; the bytes attention reads per token are reported beside the speed.

    python tools/bench_kv.py MODEL [--context 4096] [--gen 32] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import exaone_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="f32,f16,int8")
    args = ap.parse_args()
    model = exaone_cpu.load(args.model, threads=args.threads)
    c = model.config
    prompt = np.random.default_rng(0).integers(100, c.vocab_size - 100, args.context)
    caches, first, prefill_s = {}, {}, {}
    for kv in args.types.split(","):
        model.kv_dtype = kv
        cache = model.new_cache(args.context + args.gen)
        t = time.perf_counter()
        first[kv] = int(np.argmax(model.forward(prompt, cache)))
        prefill_s[kv] = time.perf_counter() - t
        caches[kv] = cache
    times = {kv: [] for kv in caches}
    for _ in range(args.rounds):
        for kv, cache in caches.items():
            assert cache.truncate(args.context)
            tok = first[kv]
            t = time.perf_counter()
            for _ in range(args.gen):
                tok = int(np.argmax(model.forward([tok], cache)))
            times[kv].append(args.gen / (time.perf_counter() - t))
    print(f"model {args.model}, {args.threads} threads, isa {exaone_cpu.isa()}, decode {args.gen} tokens after "
          f"{args.context}, medians of {args.rounds} rounds")
    print("| KV cache | bytes per token (all layers) | prefill tok/s | decode tok/s [min-max] | vs f32 |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(times["f32"]) if "f32" in times else None
    for kv, ts in times.items():
        layer = caches[kv].layers[0]
        per_token = sum((lc.k.nbytes + lc.v.nbytes + (0 if lc.k_scale is None else 2 * lc.k_scale.nbytes))
                        / lc.k.shape[1] for lc in caches[kv].layers)
        med = statistics.median(ts)
        rel = f"{med / base:.2f}x" if base else "-"
        print(f"| {kv} ({layer.k.dtype}) | {per_token / 1024:.1f} KiB | {args.context / prefill_s[kv]:.1f} | "
              f"{med:.2f} [{min(ts):.2f}-{max(ts):.2f}] | {rel} |")


if __name__ == "__main__":
    main()
