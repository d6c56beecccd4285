#!/usr/bin/env python3
"""Load test of `exaone-cpu serve` on loopback: many streaming clients, a third of them hanging up
mid-stream, hostile requests mixed in. Passes when the engine never dies, every completed stream is
exactly the text its prompt gets alone (no cross-talk), every hostile request gets a 4xx, every slot
is free at the end and the process's resident memory (less the prefix cache's bytes, which fill to
their budget by design) grew by at most --max-rss-growth MB.

    python tools/load_test.py MODEL [--clients 16] [--seconds 60] [--tokens 24] [--threads 2]

MODEL needs tokenizer files; greedy decoding makes each prompt's text deterministic. The server runs
in this process (uvicorn on a thread), the clients are threads with their own HTTP connections.
tests/test_load.py runs it briefly on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

import exaone_cpu
from exaone_cpu.server.app import ServerSettings, create_app
from exaone_cpu.server.engine import BatchEngine
from exaone_cpu.tokenizer import Tokenizer

PROMPTS = ["The history of the city began", "In a small village by the sea", "def fibonacci(n):",
           "Explain the theory of relativity", "서울의 봄은", "The recipe needs", "Once upon a time",
           "Numbers: 1 2 3 4", "Emoji 😀 time", "The main reasons are"]
HOSTILE = [  # (raw body, expected status class)
    b"[" * 20000 + b"]" * 20000,
    b'{"model": "m", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}",
    b'{"model": "m", "prompt": "x", "temperature": NaN}',
    b'{"model": "m", "prompt": "x", "stop": ["' + b"s" * 5000 + b'"]}',
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": '
    b'{"chat_template": "{{ 1 }}"}}',
    b'{"model": "m", "prompt": "x", "n": 3}',
    b'{"model": "m", "prompt": "x", "logit_bias": {"abc": 1}}',
    b"{not json",
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stream_text(http: httpx.Client, base: str, prompt: str, tokens: int, hang_up_after: int | None) -> str | None:
    """The streamed text, or None when this client hung up on purpose."""
    body = {"model": "m", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    pieces = []
    with http.stream("POST", base + "/v1/completions", json=body, timeout=120) as r:
        if r.status_code == 429:
            return ""
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"error event: {chunk}")
                pieces.append(chunk["choices"][0]["text"] if chunk["choices"] else "")
                if hang_up_after is not None and len(pieces) >= hang_up_after:
                    return None  # leaving the block closes the connection mid-stream
    return "".join(pieces)


def run(model_dir: str, clients: int = 16, seconds: float = 60.0, tokens: int = 24, threads: int = 2,
        parallel: int = 8, max_rss_growth: float = 10.0, baseline_at: float = 0.25, cache_mb: int = 64,
        log=print) -> dict:
    model = exaone_cpu.load(model_dir, threads=threads)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    expected = {}
    for p in PROMPTS:
        ids = model.generate(tokenizer.encode(p, add_special_tokens=False), max_new_tokens=tokens)
        ids = [t for t in ids if t not in model.config.eos_token_ids]
        expected[p] = tokenizer.decode(ids, skip_special_tokens=True)
    # the prefix cache on, as serve runs it: every request after the first of a prompt starts from a copy
    # of an earlier one's KV, and must still get exactly its text
    engine = BatchEngine(model, parallel=parallel, max_queue=2 * clients, cache_bytes=cache_mb << 20)
    app = create_app(engine, tokenizer, ServerSettings("m", ctx=1024, max_body_bytes=64_000))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stats = {"completed": 0, "hung_up": 0, "busy": 0, "hostile": 0, "cross_talk": [], "errors": [],
             "hostile_failures": []}
    lock = threading.Lock()
    with httpx.Client() as http:
        for p in PROMPTS[:3]:  # warm-up
            stream_text(http, base, p, tokens, None)
    rss_start = rss_mb()
    deadline = time.time() + seconds

    def client(index: int) -> None:
        rng = random.Random(index)
        hang_up = index % 3 == 0
        http = httpx.Client()  # one connection pool per client, as a real client keeps
        while time.time() < deadline:
            prompt = rng.choice(PROMPTS)
            try:
                text = stream_text(http, base, prompt, tokens, rng.randint(1, 4) if hang_up else None)
            except Exception as e:  # noqa: BLE001
                with lock:
                    stats["errors"].append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                if text is None:
                    stats["hung_up"] += 1
                elif text == "":
                    stats["busy"] += 1
                    time.sleep(0.05)
                elif text != expected[prompt]:
                    stats["cross_talk"].append((prompt, text[:80], expected[prompt][:80]))
                else:
                    stats["completed"] += 1
        http.close()

    def hostile() -> None:
        rng = random.Random(99)
        while time.time() < deadline:
            raw = rng.choice(HOSTILE)
            path = "/v1/chat/completions" if b"messages" in raw else "/v1/completions"
            r = httpx.post(base + path, content=raw, headers={"Content-Type": "application/json"}, timeout=60)
            with lock:
                stats["hostile"] += 1
                if not 400 <= r.status_code < 500:
                    stats["hostile_failures"].append((raw[:60], r.status_code))
            time.sleep(0.2)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    workers.append(threading.Thread(target=hostile))
    for w in workers:
        w.start()
    # the baseline: resident memory once the load has run for baseline_at of the time (threads,
    # connections, allocator arenas in place); growth after it is what a long-running server would
    # accumulate
    # (less what the prefix cache holds at that moment: it fills to its budget by design)
    def held_mb() -> float:
        return rss_mb() - engine.prefix_cache.nbytes / 2**20

    samples = []
    while any(w.is_alive() for w in workers):
        samples.append(round(held_mb(), 1))
        time.sleep(max(0.5, seconds / 20))
    for w in workers:
        w.join()
    stats["rss_samples_mb"] = samples
    rss_start = samples[min(len(samples) - 1, max(1, int(len(samples) * baseline_at)))] if samples else rss_start
    settle = time.time() + 10
    while engine.load != (0, 0) and time.time() < settle:
        time.sleep(0.05)
    stats["slots_left"] = engine.load
    stats["engine_healthy"] = engine.healthy
    stats["cache_hits"], stats["cached_tokens"] = engine.prefix_cache.hits, engine.prefix_cache.cached_tokens
    stats["cache_mb"] = round(engine.prefix_cache.nbytes / 2**20, 2)
    stats["rss_growth_mb"] = held_mb() - rss_start
    server.should_exit = True
    stats["passed"] = (engine.healthy and not stats["cross_talk"] and not stats["errors"]
                       and not stats["hostile_failures"] and stats["slots_left"] == (0, 0)
                       and stats["rss_growth_mb"] <= max_rss_growth and stats["completed"] > 0)
    log(json.dumps({k: v for k, v in stats.items()}, default=str, ensure_ascii=False))
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--max-rss-growth", type=float, default=10.0, metavar="MB")
    ap.add_argument("--cache-mb", type=int, default=64, help="the prefix cache's budget (serve's --cache-mb)")
    args = ap.parse_args()
    stats = run(args.model, args.clients, args.seconds, args.tokens, args.threads, args.parallel,
                args.max_rss_growth, cache_mb=args.cache_mb)
    return 0 if stats["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
