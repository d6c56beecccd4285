#!/usr/bin/env python3
"""Decode speed as users reach it: greedy against the model card's reasoning settings, through the
library (`Generator`) and through `exaone-cpu serve` with the openai client, side by side.

One process per engine: the library runs in this one; the server is `exaone-cpu serve` started as a
subprocess (--parallel 1, the same --threads), driven by one streaming chat client at a time. Each
round runs greedy and sampled back to back in both (order alternating between rounds), each for
--tokens new tokens with eos ignored, from the same short chat prompt. Decode tok/s:
  library  GenerationResult.decode_tokens_per_second (every token after the first);
  server   (completion tokens - 1) / (time of the last content chunk - time of the first), as the
           client sees it.
Reports the median of --rounds rounds and the ratios sampled / greedy and server / library.

    python tools/bench_pipeline.py MODEL [--threads 2] [--tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import exaone_cpu
from exaone_cpu import Generator

SAMPLED = {"temperature": 0.6, "top_p": 0.95, "presence_penalty": 1.5, "seed": 1}
GREEDY = {"temperature": 0.0}
MESSAGES = [{"role": "user", "content": "Explain how a CPU cache works, in detail."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def library_rate(gen: Generator, ids: list[int], tokens: int, settings: dict) -> float:
    result = gen.generate(ids, max_new_tokens=tokens, stop_token_ids=(), **settings)
    return result.decode_tokens_per_second


def server_rate(client, tokens: int, settings: dict) -> float:
    extra = {"ignore_eos": True}
    first = last = None
    used = 0
    stream = client.chat.completions.create(
        model="bench", messages=MESSAGES, max_tokens=tokens, stream=True, stream_options={"include_usage": True},
        extra_body=extra, **settings)
    for chunk in stream:
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
        if chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].delta.model_extra):
            now = time.perf_counter()
            first = first or now
            last = now
    return (used - 1) / (last - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import openai

    gen = Generator.from_pretrained(args.model, threads=args.threads)
    ids = gen.encode_chat(MESSAGES)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "exaone_cpu.cli", "serve", args.model, "--port", str(port), "--threads",
         str(args.threads), "--parallel", "1", "--model-name", "bench", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, cwd=os.path.expanduser("~"))  # not a source checkout: the installed package
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
        deadline = time.time() + 300
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.5)
        # warm-up: both paths, both settings
        for settings in (GREEDY, SAMPLED):
            library_rate(gen, ids, 16, settings)
            server_rate(client, 16, settings)
        rates: dict[str, list[float]] = {k: [] for k in ("lib greedy", "lib sampled", "srv greedy", "srv sampled")}
        for r in range(args.rounds):
            order = [("greedy", GREEDY), ("sampled", SAMPLED)]
            if r % 2:
                order.reverse()
            for name, settings in order:
                rates[f"lib {name}"].append(library_rate(gen, ids, args.tokens, settings))
                rates[f"srv {name}"].append(server_rate(client, args.tokens, settings))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    finally:
        server.terminate()
        server.wait(30)

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nmodel {args.model}, {args.threads} threads, isa {exaone_cpu.isa()} / {exaone_cpu._core.quant_isa()}, "
          f"{args.tokens} tokens, median of {args.rounds} rounds (decode tok/s)")
    print("| path | greedy | sampled (T 0.6, top_p 0.95, presence 1.5) | sampled / greedy |")
    print("|---|---:|---:|---:|")
    for path in ("lib", "srv"):
        g, s = med[f"{path} greedy"], med[f"{path} sampled"]
        print(f"| {'Generator' if path == 'lib' else 'exaone-cpu serve + openai'} | {g:.1f} | {s:.1f} | {s / g:.3f} |")
    print(f"server / library: greedy {med['srv greedy'] / med['lib greedy']:.3f}, "
          f"sampled {med['srv sampled'] / med['lib sampled']:.3f}")


if __name__ == "__main__":
    main()
