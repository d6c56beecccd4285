"""What a speculative-decoding verification step would cost: one forward of n = 1, 2, 4, 8 new
positions after a --context-token prompt (the cache truncated back after each, so every step sees the
same context), medians of --rounds interleaved rounds, relative to one decode step (n = 1). Like a
speculative round, the forward returns every position's logits (--last-only: the last one's).

    python tools/bench_verify.py MODEL [--context 512] [--rounds 9] [--threads 2]"""
import argparse
import time

import numpy as np

import exaone_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--last-only", action="store_true")
    args = ap.parse_args()
    model = exaone_cpu.load(args.model, threads=args.threads)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    cache = model.new_cache()
    model.forward(rng.integers(0, vocab, args.context), cache)
    sizes = (1, 2, 4, 8)

    def step(n: int) -> float:
        ids = rng.integers(0, vocab, n)
        t = time.perf_counter()
        model.forward(ids, cache, all_logits=not args.last_only and n > 1)
        elapsed = time.perf_counter() - t
        cache.truncate(args.context)
        return elapsed

    for n in sizes:  # warm-up
        step(n)
    runs: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(args.rounds):
        for n in sizes:
            runs[n].append(step(n))
    one = float(np.median(runs[1]))
    print(f"kernels {exaone_cpu.isa()}, {args.threads} threads, context {args.context}, {args.rounds} rounds")
    for n in sizes:
        t = float(np.median(runs[n]))
        print(f"{n} positions: {t * 1e3:7.1f} ms  ({t / one:.2f}x one decode step)")


if __name__ == "__main__":
    main()
