"""exaone-cpu eval MODEL: perplexity on a text, and KL / top-1 agreement against a reference model."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .bench import positive_int
from .generate import GGUF_HELP, MODEL_HELP, resolve_model_argument

HELP = "perplexity on a text; with --ref, KL(ref || model) and top-1 agreement against a reference model"


def ctx_int(text: str) -> int:
    v = positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (one token of context, one to predict), got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--gguf", metavar="NAME", default=None, help=GGUF_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, metavar="FILE", help="UTF-8 text, tokenized with the model's tokenizer")
    src.add_argument("--ids", type=Path, metavar="FILE", help="token ids separated by whitespace (no tokenizer needed)")
    p.add_argument("--ref", metavar="REF_MODEL", help="reference model directory or GGUF file (same vocabulary), e.g. the bf16 original")
    p.add_argument("--tokenizer", type=Path, metavar="DIR", help="tokenizer directory for --text (default: MODEL)")
    p.add_argument("--ctx", type=ctx_int, default=None, metavar="N",
                   help="window length: the text is cut into windows of N tokens scored independently "
                        "(default 512, or the model's max_position_embeddings if smaller)")
    p.add_argument("--max-tokens", type=positive_int, default=None, metavar="N", help="evaluate only the first N tokens")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help="threads (default: all CPUs this process may use)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def read_ids(path: Path) -> list[int]:
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError as e:
        raise FileNotFoundError(f"cannot read --ids file {path}: {e.strerror}") from None
    ids = []
    for i, w in enumerate(words):
        try:
            ids.append(int(w))
        except ValueError:
            raise ValueError(f"{path}: item {i + 1} ({w!r}) is not an integer token id") from None
    return ids


def tokenize(path: Path, tokenizer_dir: Path) -> list[int]:
    from exaone_cpu.tokenizer import Tokenizer

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FileNotFoundError(f"cannot read --text file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    if tokenizer_dir.is_dir() and not any((tokenizer_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise FileNotFoundError(f"no tokenizer in {tokenizer_dir} (tokenizer.json or vocab.json + merges.txt); "
                                "pass --tokenizer DIR, or token ids with --ids FILE")
    return Tokenizer.from_pretrained(tokenizer_dir).encode(text)


def run(args: argparse.Namespace) -> int:
    import exaone_cpu
    from exaone_cpu.evaluate import evaluate
    from exaone_cpu.loading import read_config

    args.model = resolve_model_argument(args)
    config = read_config(args.model)  # a bad model fails before the text is read
    if args.ids is not None:
        ids, source = read_ids(args.ids), str(args.ids)
    else:
        ids, source = tokenize(args.text, args.tokenizer or Path(args.model)), str(args.text)
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens]
    if len(ids) < 2:
        raise ValueError(f"{source} gives {len(ids)} token(s); at least 2 are needed")
    bad = [(i, t) for i, t in enumerate(ids) if not 0 <= t < config.vocab_size]
    if bad:
        raise ValueError(f"token id {bad[0][1]} at position {bad[0][0]} is out of the model's vocabulary "
                         f"[0, {config.vocab_size})")
    if args.ctx is None:
        args.ctx = min(512, config.max_position_embeddings)
    if args.ctx > config.max_position_embeddings:
        raise ValueError(f"--ctx {args.ctx} exceeds the model's max_position_embeddings ({config.max_position_embeddings})")

    t0 = time.perf_counter()
    model = exaone_cpu.load(args.model, threads=args.threads)
    ref = exaone_cpu.load(args.ref, threads=args.threads) if args.ref else None
    load_s = time.perf_counter() - t0
    result = evaluate(model, ids, ctx=args.ctx, ref_model=ref)
    d = {"model": str(args.model), "ref": args.ref, "source": source, "load_s": load_s, **result.to_dict()}
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"model        {args.model}")
    print(f"text         {source}: {result.tokens} tokens, {result.windows} window(s) of <= {result.ctx}, "
          f"{result.scored} predictions scored")
    print(f"time         {result.seconds:.1f} s ({result.tokens * (2 if ref else 1) / result.seconds:.1f} tok/s "
          f"incl. the full logits), load {load_s:.2f} s")
    print(f"perplexity   {result.perplexity:.4f} (mean NLL {result.nll:.4f} nats/token)")
    if ref is not None:
        print(f"reference    {args.ref}: perplexity {result.ref_perplexity:.4f} (mean NLL {result.ref_nll:.4f})")
        print(f"KL(ref||m)   mean {result.kl_mean:.6f}, p99 {result.kl_p99:.6f}, max {result.kl_max:.6f} nats/token")
        print(f"top-1 agree  {100 * result.top1_agreement:.2f} % of {result.scored} positions")
    return 0
