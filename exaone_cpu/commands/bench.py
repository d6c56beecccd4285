"""exaone-cpu bench MODEL: prefill and decode throughput, load time and memory of a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .generate import GGUF_HELP, MODEL_HELP, resolve_model_argument

HELP = "measure prefill/decode speed (tok/s), load time and memory on random token ids"


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--gguf", metavar="NAME", default=None, help=GGUF_HELP)
    p.add_argument("--prompt", type=positive_int, default=512, metavar="N", help="prompt tokens to prefill (default 512)")
    p.add_argument("--gen", type=positive_int, default=128, metavar="N", help="tokens to decode, greedy, no eos stop (default 128)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help="threads (default: all CPUs this process may use)")
    p.add_argument("--repeat", type=positive_int, default=3, metavar="N", help="timed runs; medians are reported (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt ids (default 0)")
    p.add_argument("--kv-dtype", choices=("f32", "f16", "int8"), default="f32",
                   help="KV cache element type (default f32; f16 halves what attention reads, int8 quarters it)")
    p.add_argument("--no-mmap", action="store_true",
                   help="read the weights into memory instead of mapping the files (as generate, chat and serve)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    import exaone_cpu
    from exaone_cpu import _core
    from exaone_cpu.bench import (current_rss_mib, decode_bytes, peak_rss_mib, run_benchmark, weight_files,
                                  weight_format)
    from exaone_cpu.loading import read_config

    args.model = resolve_model_argument(args)
    config = read_config(args.model)  # fails fast on a bad model, before loading
    if args.prompt + args.gen > config.max_position_embeddings:
        raise ValueError(f"--prompt {args.prompt} + --gen {args.gen} exceeds the model's "
                         f"max_position_embeddings ({config.max_position_embeddings})")
    progress = sys.stderr if not args.json else None
    t0 = time.perf_counter()
    model = exaone_cpu.load(args.model, threads=args.threads, kv_dtype=args.kv_dtype, mmap=not args.no_mmap)
    load_s = time.perf_counter() - t0
    files = weight_files(args.model)
    if progress:
        print(f"loaded {args.model} in {load_s:.2f} s; warm-up, then {args.repeat} runs of "
              f"prefill {args.prompt} + decode {args.gen}", file=progress, flush=True)

    def on_run(i, pre, dec):
        if progress:
            print(f"  run {i + 1}/{args.repeat}: prefill {args.prompt / pre:8.2f} tok/s  "
                  f"decode {args.gen / dec:8.2f} tok/s", file=progress, flush=True)

    result = run_benchmark(model, args.prompt, args.gen, args.repeat, seed=args.seed, on_run=on_run)
    result.extra = {
        "model": str(args.model),
        "isa": exaone_cpu.isa(),
        "quant_isa": _core.quant_isa(),  # the int8/int4 matmuls' variant (e.g. avx2-avx512vnni)
        "threads": _core.get_num_threads(),
        "kv_dtype": model.kv_dtype,
        "weight_format": weight_format(model),
        "weight_files": [f.name for f in files],
        "weight_file_bytes": sum(f.stat().st_size for f in files),
        "prefill_chunk": model.prefill_chunk,
        "mmap": not args.no_mmap,
        "malloc": _core.malloc_mode(),  # EXAONE_CPU_MALLOC: whether freed activations stay in the heap
        "load_s": load_s,
        "peak_rss_mib": peak_rss_mib(),
        "rss_mib": current_rss_mib(),
        "exaone_cpu_version": exaone_cpu.__version__,
    }
    # what a decode step reads, at the middle of the decoded tokens' contexts
    weight_bytes, kv_bytes = decode_bytes(model, args.prompt + (args.gen - 1) / 2)
    result.extra["decode_weight_bytes"] = weight_bytes
    result.extra["decode_kv_bytes"] = kv_bytes
    result.extra["decode_gb_s"] = (weight_bytes + kv_bytes) * result.decode_tok_s.median / 1e9
    d = result.to_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    pre, dec = result.prefill_tok_s, result.decode_tok_s
    rss = f"{d['rss_mib']:.0f} MiB" if d["rss_mib"] is not None else "n/a"
    print(f"model        {d['model']}")
    print(f"weights      {d['weight_format']}, {d['weight_file_bytes'] / 1e6:.1f} MB in {len(files)} file(s)")
    print(f"kernels      {d['isa']} (int8/int4: {d['quant_isa']}), {d['threads']} threads, "
          f"prefill chunk {d['prefill_chunk']}, KV cache {d['kv_dtype']}, malloc {d['malloc']}")
    print(f"load         {load_s:.2f} s (+ {result.warmup_s:.2f} s warm-up: one untimed run of the same shape)")
    print(f"memory       peak RSS {d['peak_rss_mib']:.0f} MiB, current RSS {rss}")
    print()
    print(f"{'test':<14}{'tok/s median':>14}{'min':>10}{'max':>10}   ({args.repeat} runs)")
    print(f"{'prefill ' + str(args.prompt):<14}{pre.median:>14.2f}{pre.min:>10.2f}{pre.max:>10.2f}")
    print(f"{'decode ' + str(args.gen):<14}{dec.median:>14.2f}{dec.min:>10.2f}{dec.max:>10.2f}")
    print()
    print(f"a decode step reads {weight_bytes / 1e6:.1f} MB of weights + {kv_bytes / 1e6:.1f} MB of KV cache "
          f"(at context {args.prompt + (args.gen - 1) / 2:.0f}): {d['decode_gb_s']:.1f} GB/s at the median")
    return 0
