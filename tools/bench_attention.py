"""Prefill attention alone: a prompt of --context tokens attended in chunks of --chunk (as the model
runs a long prompt), one layer of the 1.2B's shape (32 query / 8 KV heads of 64), timed per cache
type with _core.attention on random data; prints the seconds per layer and for --layers layers.

    python tools/bench_attention.py [--context 4096] [--chunk 512] [--layers 30] [--repeat 3]

EXAONE_CPU_ISA picks the kernels as usual (avx2: the AVX2 ones on any AVX2 machine)."""
import argparse
import time

import numpy as np

import exaone_cpu
from exaone_cpu import _core


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="runs per chunk; the fastest counts")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    H, KV, D, S = 32, 8, 64, args.context
    k = rng.standard_normal((KV, S, D), dtype=np.float32)
    v = rng.standard_normal((KV, S, D), dtype=np.float32)
    slot_pos = np.arange(S, dtype=np.int64)
    print(f"kernels {exaone_cpu.isa()}, {_core.get_num_threads()} threads; prompt {S} in chunks of {args.chunk}")
    for dtype in (np.float32, np.float16):
        kc, vc = k.astype(dtype), v.astype(dtype)
        total = 0.0
        for p0 in range(0, S, args.chunk):
            T = min(args.chunk, S - p0)
            q = rng.standard_normal((T, H, D), dtype=np.float32)
            pos = np.arange(p0, p0 + T, dtype=np.int64)
            key_pos = np.where(slot_pos < p0 + T, slot_pos, -1)
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                _core.attention(q, kc, vc, key_pos, pos, 0, D**-0.5)
                runs.append(time.perf_counter() - t)
            total += min(runs)
        print(f"{np.dtype(dtype).name:>8} cache: {total:.3f} s per layer, {total * args.layers:.1f} s for {args.layers}")


if __name__ == "__main__":
    main()
