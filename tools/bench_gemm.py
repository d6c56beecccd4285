#!/usr/bin/env python3
"""The batched int4/int8 GEMM rate a decode step of N sequences runs at: the MLP projections
(gate/up/down of every layer, through the public quant.project / QuantLinear call) on N tokens at once.

One token is bound by memory (the weights are read once per step), many tokens by the integer units;
the point where the two meet is the ceiling of batched decoding in the server.

    python tools/bench_gemm.py MODEL [MODEL ...] [--tokens 1,2,4,8,64] [--threads 2] [--repeat 5]

With several models (checkpoints or GGUF files of the same shape) they are loaded into one process
and timed in turn, round after round, and each gets its rate as a ratio to the first's: on a machine
whose speed drifts by 10-30 % within minutes, such ratios stay put where rates measured in separate
runs do not (e.g. a GGUF file's K-format kernels against our int4 checkpoint's, before and after a
kernel change).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import exaone_cpu
from exaone_cpu.quant import project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="model")
    ap.add_argument("--tokens", default="1,2,4,8,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    models = [exaone_cpu.load(m, threads=args.threads) for m in args.models]
    c = models[0].config
    for path, m in zip(args.models[1:], models[1:]):
        if (m.config.hidden_size, m.config.intermediate_size, m.config.num_hidden_layers) != \
                (c.hidden_size, c.intermediate_size, c.num_hidden_layers):
            raise SystemExit(f"bench_gemm.py: {path} has another shape than {args.models[0]}")
    macs_per_token = 3 * c.hidden_size * c.intermediate_size * c.num_hidden_layers
    rng = np.random.default_rng(0)
    print(f"{args.threads} threads, isa {exaone_cpu.isa()}; MLP projections of {c.num_hidden_layers} layers")
    print("| tokens | model | formats | ms (best of repeats) | GMAC/s | GB/s of weights | GMAC/s / the first's |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for T in (int(t) for t in args.tokens.split(",")):
        x = rng.standard_normal((T, c.hidden_size)).astype(np.float32)
        xi = rng.standard_normal((T, c.intermediate_size)).astype(np.float32)

        def run(layers, x=x, xi=xi) -> None:
            for layer in layers:
                project(x, layer.gate_proj, layer.up_proj)
                layer.down_proj(xi)

        times: list[list[float]] = [[] for _ in models]
        for m in models:
            run(m.layers)  # warm: pages in, buffers sized
        for _ in range(args.repeat):
            for i, m in enumerate(models):
                start = time.perf_counter()
                run(m.layers)
                times[i].append(time.perf_counter() - start)
        first = None
        for path, m, ts in zip(args.models, models, times):
            t = min(ts)
            lins = [lin for layer in m.layers for lin in (layer.gate_proj, layer.up_proj, layer.down_proj)]
            nbytes = sum(lin.nbytes for lin in lins) if all(hasattr(lin, "nbytes") for lin in lins) else None
            formats = "/".join(sorted({getattr(getattr(lin, "format", None), "name", "float") for lin in lins}))
            rate = T * macs_per_token / t / 1e9
            first = first or rate
            gbs = "" if nbytes is None else f"{nbytes / t / 1e9:.1f}"
            print(f"| {T} | {path} | {formats} | {t * 1e3:.1f} | {rate:.0f} | {gbs} | {rate / first:.3f} |", flush=True)


if __name__ == "__main__":
    main()
