"""exaone-cpu serve: an OpenAI-compatible endpoint with batched decoding."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .generate import (add_model_arguments, add_speculative_arguments, load_options, resolve_model_argument,
                       speculative_option)

HELP = "Serve a model over an OpenAI-compatible HTTP API (needs: pip install 'exaone_cpu[server]')."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)  # MODEL, --gguf, --threads, --quant, --kv-dtype, --no-mmap as for generate and chat
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--ctx", type=int, default=None,
                   help="context length per request, prompt + completion (default: min(max_position_embeddings, 8192))")
    p.add_argument("--parallel", type=int, default=4, help="sequences decoded together (default 4)")
    p.add_argument("--cache-mb", type=int, default=1024, metavar="MB",
                   help="memory for the KV of finished requests, reused by later ones that share a prefix "
                        "(system prompt, conversation so far); least recently used evicted (default 1024; 0: off)")
    p.add_argument("--batch-tokens", type=int, default=None, metavar="N",
                   help="prompt tokens fed per step beside the running streams (default: as many as keep a "
                        "step within 2x a decode step, measured while serving)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a free slot before new ones get 429 (default 16)")
    p.add_argument("--api-key", default=os.environ.get("EXAONE_CPU_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $EXAONE_CPU_API_KEY, else no key)")
    p.add_argument("--model-name", default=None, help="name clients use in 'model' (default: the directory name)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to call the API, e.g. http://localhost:3000 (repeatable; '*' for "
                        "any); CORS is off by default")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template to use instead of the checkpoint's")
    g = p.add_argument_group(
        "sampling defaults",
        "For requests that do not set them. Unset here, they come from the checkpoint's generation_config.json "
        "as in the library (greedy for EXAONE 4.0).")
    g.add_argument("--temperature", type=float, default=None, metavar="T", help="0 is greedy")
    g.add_argument("--top-p", type=float, default=None, metavar="P")
    g.add_argument("--top-k", type=int, default=None, metavar="K", help="0: off")
    g.add_argument("--min-p", type=float, default=None, metavar="P")
    g.add_argument("--repetition-penalty", type=float, default=None, metavar="R")
    g.add_argument("--presence-penalty", type=float, default=None, metavar="X")
    g.add_argument("--frequency-penalty", type=float, default=None, metavar="X")
    add_speculative_arguments(p)


SAMPLING_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                     "frequency_penalty")


def build(args: argparse.Namespace):
    """The Starlette app for these arguments (loads the model)."""
    try:
        from ..server.app import ServerSettings, create_app
        from ..server.engine import BatchEngine
    except ModuleNotFoundError as e:
        raise ValueError(f"the server needs the [server] extra ({e.name} is missing): "
                         "pip install 'exaone_cpu[server]'") from None
    from ..loading import load
    from ..sampling import load_generation_config
    from ..tokenizer import Tokenizer

    for name in ("port", "parallel", "max_queue", "max_body_bytes", "cache_mb", "batch_tokens"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("max_queue", "cache_mb") else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be {'>= 0' if name in ('max_queue', 'cache_mb') else 'positive'}")
    served_name = args.model_name or (args.model if not Path(args.model).exists() else Path(args.model).resolve().name)
    args.model = resolve_model_argument(args)
    defaults = load_generation_config(args.model).with_options(
        **{name: getattr(args, name) for name in SAMPLING_DEFAULTS})
    template = None
    if args.chat_template is not None:
        try:
            template = Path(args.chat_template).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--chat-template {args.chat_template}: {e}") from None
    model = load(args.model, **load_options(args))
    speculative = speculative_option(args, model)
    limit = model.config.max_position_embeddings
    ctx = args.ctx if args.ctx is not None else min(limit, 8192)
    if not 1 <= ctx <= limit:
        raise ValueError(f"--ctx must be between 1 and max_position_embeddings ({limit})")
    tokenizer = Tokenizer.from_pretrained(args.model)
    if template is not None:
        tokenizer.chat_template = template
        try:  # a template that cannot render a plain conversation fails now, not on every request
            tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                          tokenize=False)
        except Exception as e:  # noqa: BLE001 - jinja's syntax and runtime errors alike
            raise ValueError(f"--chat-template {args.chat_template}: cannot render a conversation: {e}") from None
    settings = ServerSettings(model_name=served_name, ctx=ctx,
                              api_key=args.api_key or None, max_body_bytes=args.max_body_bytes, defaults=defaults,
                              cors_origins=tuple(args.cors_origin))
    engine = BatchEngine(model, parallel=args.parallel, max_queue=args.max_queue, batch_tokens=args.batch_tokens,
                         cache_bytes=args.cache_mb << 20, speculative=speculative)
    return create_app(engine, tokenizer, settings), settings


def run(args: argparse.Namespace) -> int:
    app, settings = build(args)
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    engine = app.state.server.engine
    print(f"serving '{settings.model_name}' on http://{args.host}:{args.port}/v1 "
          f"(parallel {args.parallel}, ctx {settings.ctx}{', API key required' if settings.api_key else ''}"
          f"{', speculative ' + engine.speculative.method if engine.speculative else ''})",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           access_log=False))
    # an engine that stopped on an error of its own cannot serve: stop, and exit non-zero for a supervisor
    engine.on_failure = lambda error: setattr(server, "should_exit", True)
    server.run()
    if engine.failure is not None:
        print(f"exaone-cpu serve: the engine stopped: {engine.failure!r}", file=sys.stderr)
        return 1
    return 0
