#!/usr/bin/env python3
"""The batched int4/int8 GEMM rate a decode step of N sequences runs at: the MLP projections
(gate/up/down of every layer, through the public quant.project / QuantLinear call) on N tokens at once.

One token is bound by memory (the weights are read once per step), many tokens by the integer units;
the point where the two meet is the ceiling of batched decoding in the server.

    python tools/bench_gemm.py MODEL [--tokens 1,2,4,8,64] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import exaone_cpu
from exaone_cpu.quant import project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", default="1,2,4,8,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    model = exaone_cpu.load(args.model, threads=args.threads)
    layers = model.layers
    c = model.config
    macs_per_token = 3 * c.hidden_size * c.intermediate_size * len(layers)
    weight_bytes = sum(l.gate_proj.nbytes + l.up_proj.nbytes + l.down_proj.nbytes for l in layers) \
        if hasattr(layers[0].gate_proj, "nbytes") else None
    rng = np.random.default_rng(0)
    print(f"model {args.model}, {args.threads} threads, isa {exaone_cpu.isa()}; MLP projections of {len(layers)} layers")
    print("| tokens | ms (best of repeats) | GMAC/s | GB/s of weights |")
    print("|---:|---:|---:|---:|")
    for T in (int(t) for t in args.tokens.split(",")):
        x = rng.standard_normal((T, c.hidden_size)).astype(np.float32)
        xi = rng.standard_normal((T, c.intermediate_size)).astype(np.float32)

        def run() -> None:
            for layer in layers:
                project(x, layer.gate_proj, layer.up_proj)
                layer.down_proj(xi)

        run()
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        t = min(times)
        rate = "" if weight_bytes is None else f"{weight_bytes / t / 1e9:.1f}"
        print(f"| {T} | {t * 1e3:.1f} | {T * macs_per_token / t / 1e9:.0f} | {rate} |", flush=True)


if __name__ == "__main__":
    main()
