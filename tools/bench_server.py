#!/usr/bin/env python3
"""Aggregate decode throughput of `exaone-cpu serve` at several concurrency levels.

Starts the server on MODEL in this process (loopback, random port), then for each level N sends N
streaming /v1/completions requests at once (greedy, or --sampled with the model card's reasoning
settings; `ignore_eos`, fixed length) and reports total
completion tokens / wall time, median of --repeat runs. Batched decoding should make the aggregate
grow with N: each step reads the weights once for every active sequence.

    python tools/bench_server.py MODEL [--levels 1,2,4,8] [--tokens 32] [--threads 2] [--repeat 3] [--sampled]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import socket
import statistics
import threading
import time

import httpx
import uvicorn

import exaone_cpu
from exaone_cpu.server.app import ServerSettings, create_app
from exaone_cpu.server.engine import BatchEngine
from exaone_cpu.tokenizer import Tokenizer

PROMPTS = ["The history of the city began", "In a small village by the sea", "def fibonacci(n):",
           "Explain the theory of relativity", "서울의 봄은", "The recipe needs", "Once upon a time",
           "The main reasons are"]


SAMPLED = {"temperature": 0.6, "top_p": 0.95, "presence_penalty": 1.5}  # the model card's reasoning settings


def one_request(base: str, prompt: str, tokens: int, sampling: dict) -> int:
    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}, **sampling}
    used = 0
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    used = chunk["usage"]["completion_tokens"]
    return used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sampled", action="store_true",
                    help="temperature 0.6, top_p 0.95, presence_penalty 1.5 instead of greedy")
    args = ap.parse_args()
    sampling = SAMPLED if args.sampled else {"temperature": 0}
    levels = [int(x) for x in args.levels.split(",")]

    model = exaone_cpu.load(args.model, threads=args.threads)
    engine = BatchEngine(model, parallel=max(levels), max_queue=max(levels))
    app = create_app(engine, Tokenizer.from_pretrained(args.model), ServerSettings("bench", ctx=2048))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    one_request(base, "warm up", 4, sampling)

    print(f"model {args.model}, {args.threads} threads, {args.tokens} tokens per request, isa {exaone_cpu.isa()}, "
          f"{'sampled ' + str(SAMPLED) if args.sampled else 'greedy'}")
    print("| concurrent requests | aggregate tokens/s (median) | min | max | per request tokens/s |")
    print("|---|---|---|---|---|")
    for n in levels:
        rates = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                total = sum(pool.map(lambda p: one_request(base, p, args.tokens, sampling), PROMPTS[:n]))
            rates.append(total / (time.perf_counter() - start))
        med = statistics.median(rates)
        print(f"| {n} | {med:.1f} | {min(rates):.1f} | {max(rates):.1f} | {med / n:.1f} |", flush=True)
    server.should_exit = True


if __name__ == "__main__":
    main()
