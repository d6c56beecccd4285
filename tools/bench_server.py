#!/usr/bin/env python3
"""`exaone-cpu serve` under load: aggregate decode throughput, prefix-cache reuse, prefill stalls.

Starts the server on MODEL in this process (loopback, random port) and measures, median of --repeat:
- throughput: for each level N, N streaming /v1/completions requests at once (greedy, or --sampled with
  the model card's reasoning settings; `ignore_eos`, fixed length): total completion tokens / wall time.
  Batched decoding should make the aggregate grow with N (each step reads the weights once).
- --prefix N: time to first token of an N-token prompt, then of the same prompt again (served from
  the prefix cache), and their ratio.
- --stall N: a stream is running when an N-token prompt arrives; the running stream's longest gap
  between tokens against its median gap (chunked prefill keeps the ratio small).

    python tools/bench_server.py MODEL [--levels 1,2,4,8] [--tokens 32] [--threads 2] [--repeat 3] [--sampled]
                                       [--prefix 900] [--stall 900] [--cache-mb 1024]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
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


def random_prompt(tokens: int, seed: int) -> list[int]:
    """Token ids of ordinary vocabulary entries (the speed does not depend on what they say)."""
    rng = random.Random(seed)
    return [rng.randrange(1000, 50000) for _ in range(tokens)]


def time_to_first_token(base: str, prompt: list[int]) -> tuple[float, int]:
    """Seconds to the first streamed token, and usage's cached_tokens."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": 2, "stream": True, "temperature": 0,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    start, first, cached = time.perf_counter(), None, -1
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"]:
                first = time.perf_counter() - start
            if chunk.get("usage"):
                cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    return first, cached


def stream_gaps(base: str, tokens: int, started: threading.Event, words: list[int]) -> list[float]:
    """Arrival times of a greedy stream's tokens; sets `started` after its 8th token. The stream is held
    to whole-word tokens (logit_bias): a random model's tokens are often partial characters, which
    arrive with the next whole piece, and the client would see two steps as one gap."""
    body = {"model": "bench", "prompt": random_prompt(16, 0), "max_tokens": tokens, "stream": True,
            "temperature": 0, "ignore_eos": True, "logit_bias": {str(t): 100 for t in words}}
    times = []
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                times.append(time.perf_counter())
                if len(times) == 8:
                    started.set()
    return times


def measure_stall(base: str, prompt_tokens: int, seed: int, words: list[int]) -> tuple[float, float, float]:
    """(longest gap, median gap, time to first token of the long prompt) while it prefills."""
    started = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # long enough to outlast the prefill: the long prompt's first token, then as many again
        running = pool.submit(stream_gaps, base, 400, started, words)
        started.wait()
        ttft, _ = time_to_first_token(base, random_prompt(prompt_tokens, seed))
        times = running.result()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return max(gaps), statistics.median(gaps), ttft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sampled", action="store_true",
                    help="temperature 0.6, top_p 0.95, presence_penalty 1.5 instead of greedy")
    ap.add_argument("--prefix", type=int, default=0, metavar="N", help="measure reuse of an N-token prompt")
    ap.add_argument("--stall", type=int, default=0, metavar="N", help="measure stalls while an N-token prompt prefills")
    ap.add_argument("--cache-mb", type=int, default=1024)
    ap.add_argument("--batch-tokens", type=int, default=None)
    args = ap.parse_args()
    sampling = SAMPLED if args.sampled else {"temperature": 0}
    levels = [int(x) for x in args.levels.split(",") if x]

    model = exaone_cpu.load(args.model, threads=args.threads)
    engine = BatchEngine(model, parallel=max(levels + [2]), max_queue=max(levels + [2]), batch_tokens=args.batch_tokens,
                         cache_bytes=args.cache_mb << 20)
    tokenizer = Tokenizer.from_pretrained(args.model)
    app = create_app(engine, tokenizer, ServerSettings("bench", ctx=4096))
    words = [t for w in (" the", " and", " of", " to") for t in tokenizer.encode(w, add_special_tokens=False)]
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
    if args.prefix:
        cold, warm = [], []
        for r in range(args.repeat):
            prompt = random_prompt(args.prefix, 100 + r)
            cold.append(time_to_first_token(base, prompt)[0])
            t, cached = time_to_first_token(base, prompt)
            warm.append(t)
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"prefix: {args.prefix}-token prompt, time to first token {c:.3f} s, again {w:.3f} s "
              f"(cached_tokens {cached}): {w / c:.3f}x", flush=True)
    if args.stall:
        results = [measure_stall(base, args.stall, 200 + r, words) for r in range(args.repeat)]
        for longest, median, ttft in results:
            print(f"stall: {args.stall}-token prompt prefilled beside a stream: longest gap {longest * 1000:.0f} ms, "
                  f"median {median * 1000:.0f} ms ({longest / median:.2f}x); its time to first token {ttft:.2f} s",
                  flush=True)
    if not levels:
        server.should_exit = True
        return
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
