#!/usr/bin/env python3
"""The sampler alone: milliseconds per token at a vocabulary of 102400, for every option combination.

Each setting gets a fresh exaone_cpu.sampling.Sampler with a 500-token prompt and 300 accepted output
tokens (so the penalties have counts to apply), then samples --steps times from random float32
logits (normal, std 3); the figure is the median of the per-call times. Runs on every kernel variant
this CPU has (the softmax numerator is the only vectorised part).

    python tools/bench_sampler.py [--vocab 102400] [--steps 300]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

from exaone_cpu import _core
from exaone_cpu.sampling import Sampler, SamplingParams

TEMPERATURES = (0.0, 0.6, 1.0)
FILTERS = ({}, {"top_k": 50}, {"top_p": 0.95}, {"min_p": 0.05}, {"top_k": 50, "top_p": 0.9, "min_p": 0.05},
           {"top_p": 0.5}, {"top_k": 2000, "top_p": 0.95})
PENALTIES = ({}, {"presence_penalty": 1.5}, {"repetition_penalty": 1.1, "frequency_penalty": 0.3},
             {"logit_bias": {5: 2.0, 9: -100.0}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=102400)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    logits = [(rng.standard_normal(args.vocab) * 3).astype(np.float32) for _ in range(8)]
    prompt = rng.integers(0, args.vocab, 500)
    output = rng.integers(0, args.vocab, 300)
    for isa in _core.available_isas():
        _core.set_isa(isa)
        worst = (0.0, "")
        print(f"\n{isa}: ms per token (median of {args.steps}), vocab {args.vocab}")
        print("| temperature | filters | penalties / bias | ms |")
        print("|---|---|---|---|")
        for t, f, p in itertools.product(TEMPERATURES, FILTERS, PENALTIES):
            if t == 0.0 and f:
                continue  # greedy: the filters do not apply
            sampler = Sampler(SamplingParams(temperature=t, seed=1, **f, **p), args.vocab, prompt)
            for token in output:
                sampler.accept(int(token))
            times = []
            for i in range(args.steps):
                row = logits[i % len(logits)]
                start = time.perf_counter()
                sampler.sample(row)
                times.append(time.perf_counter() - start)
            ms = statistics.median(times) * 1e3
            label = (t, f or "-", p or "-")
            worst = max(worst, (ms, str(label)))
            print(f"| {t} | {f or '-'} | {p or '-'} | {ms:.3f} |")
        print(f"slowest on {isa}: {worst[0]:.3f} ms {worst[1]}")


if __name__ == "__main__":
    main()
