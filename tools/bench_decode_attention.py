#!/usr/bin/env python3
"""Decode attention's speed (tools/bench_attention.py times prefill's): one query token (every
query head) attending over a KV cache of --context positions, through the public _core.attention,
over --layers caches in turn so that they come from memory as in a decode step (30 layers of the
1.2B at 580 positions hold 36 MB of f16 K/V, more than a 32 MB L3), not from cache.

    python tools/bench_decode_attention.py [--context 580] [--layers 40] [--kv-dtype f16] [--threads 2]
                                           [--heads 32 --kv-heads 8 --head-dim 64] [--repeat 200]

Prints the median time per layer (over --repeat passes over all the layers) and the K/V bytes it
read per second. To compare two builds, run it with each in turn, alternated a few times (e.g. the
older one installed apart with `pip install --target DIR` and put first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from exaone_cpu import _core

KV_DTYPES = {"f32": np.float32, "f16": np.float16, "int8": np.int8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=580, help="positions in each cache (default 580)")
    ap.add_argument("--layers", type=int, default=40, help="caches attended in turn (default 40)")
    ap.add_argument("--kv-dtype", choices=sorted(KV_DTYPES), default="f16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    for name in ("context", "layers", "threads", "heads", "kv_heads", "head_dim", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.heads % args.kv_heads:
        ap.error(f"--heads {args.heads} is not a multiple of --kv-heads {args.kv_heads}")
    _core.set_num_threads(args.threads)
    n, KV, D = args.context, args.kv_heads, args.head_dim
    slots = n + n // 8  # room to grow, as a cache has: the kernel skips the empty slots
    rng = np.random.default_rng(0)
    caches = []
    for _ in range(args.layers):
        k, v = (rng.standard_normal((KV, slots, D)).astype(np.float32) for _ in range(2))
        scales: tuple = ()
        if args.kv_dtype == "int8":
            ks, vs = (np.abs(x).max(axis=2) / np.float32(127) for x in (k, v))
            k, v = (np.rint(x / s[..., None]).astype(np.int8) for x, s in ((k, ks), (v, vs)))
            scales = (ks.astype(np.float32), vs.astype(np.float32))
        else:
            k, v = k.astype(KV_DTYPES[args.kv_dtype]), v.astype(KV_DTYPES[args.kv_dtype])
        caches.append((k, v) + scales)
    key_pos = np.full(slots, -1, np.int64)
    key_pos[:n] = np.arange(n)
    q = rng.standard_normal((1, args.heads, D)).astype(np.float32)
    q_pos = np.array([n - 1], np.int64)
    out = np.empty_like(q)
    kv_bytes = sum(a[:, :n].nbytes for a in caches[0][:2])

    def one_pass() -> float:
        start = time.perf_counter()
        for k, v, *scales in caches:
            _core.attention(q, k, v, key_pos, q_pos, 0, D**-0.5, out, *scales)
        return (time.perf_counter() - start) / len(caches)

    one_pass()  # warm: pages in, scratch sized
    per_layer = float(np.median([one_pass() for _ in range(args.repeat)]))
    print(f"{args.threads} threads, isa {_core.isa()}, {args.kv_dtype} cache, {args.heads} / {KV} heads of {D}, "
          f"{n} positions, {args.layers} caches: {per_layer * 1e6:.1f} us a layer, "
          f"{kv_bytes / per_layer / 1e9:.1f} GB/s of K/V")


if __name__ == "__main__":
    main()
