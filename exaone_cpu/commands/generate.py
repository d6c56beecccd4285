"""`exaone-cpu generate MODEL PROMPT`: one answer, streamed to stdout.

Also holds the options `exaone-cpu chat` shares (model loading, sampling, stopping).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..parsing import tool_call_text
from ..progress import PrefillProgress

HELP = "Answer one prompt, streaming the text to stdout."

# The model card's advice for reasoning mode, used with --think when no sampling option is given.
REASONING_SAMPLING = {"temperature": 0.6, "top_p": 0.95}


MODEL_HELP = ("checkpoint directory (config.json, safetensors, tokenizer), GGUF file, or Hugging Face Hub id "
              "(from the local cache first; HF_HUB_OFFLINE=1: never download)")
GGUF_HELP = "with a GGUF repo or a directory of GGUF files: the file to run, by name or quant type (e.g. Q4_K_M)"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--gguf", metavar="NAME", default=None, help=GGUF_HELP)
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the kernels (default: every CPU this process may use)")
    parser.add_argument("--quant", choices=("int8", "int4"), default=None,
                        help="quantize a float checkpoint's projections as it loads (default: as stored)")
    parser.add_argument("--kv-dtype", choices=("f32", "f16", "int8"), default="f32",
                        help="KV cache precision (f16 halves its memory, int8 with a scale per row about quarters it; default f32)")
    parser.add_argument("--no-mmap", action="store_true",
                        help="read the weights into memory instead of mapping the files (for files that may change)")


def add_speculative_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "speculative decoding",
        "Guess the next tokens and check several in one forward pass: the same output, faster where the "
        "guesses are right. The number of guesses follows the measured acceptance; guessing stops when "
        "it does not pay.")
    g.add_argument("--speculative", choices=("prompt-lookup", "off"), default=None,
                   help="prompt-lookup: guess what followed the last tokens earlier in the prompt or the answer "
                        "(free; pays when the answer quotes its context)")
    g.add_argument("--draft", default=None, metavar="MODEL",
                   help="a draft model with the same tokenizer (e.g. the int4 1.2B for the 32B), loaded as stored: "
                        "its greedy guesses")
    g.add_argument("--draft-max", type=int, default=None, metavar="K",
                   help="guesses per forward pass at most (default 8)")


def speculative_option(args: argparse.Namespace, model) -> Any:
    """The Speculative the options ask for (None: off), the draft model loaded and checked."""
    from ..speculative import MAX_NUM_TOKENS, speculative_config

    if args.draft is not None and args.speculative is not None:
        raise ValueError("give --draft MODEL or --speculative, not both")
    value = args.draft if args.draft is not None else args.speculative
    if value is None or value == "off":
        if args.draft_max is not None:
            raise ValueError("--draft-max needs --speculative prompt-lookup or --draft MODEL")
        return None
    if args.draft_max is not None and not 1 <= args.draft_max <= MAX_NUM_TOKENS:
        raise ValueError(f"--draft-max must be between 1 and {MAX_NUM_TOKENS}, got {args.draft_max}")
    from ..loading import load

    def loader(path):
        return load(path, threads=args.threads, kv_dtype=args.kv_dtype, mmap=not args.no_mmap)

    return speculative_config(value, model, num_tokens=args.draft_max, loader=loader)


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """exaone_cpu.load keyword options from add_model_arguments' options."""
    return {"threads": args.threads, "quant": args.quant, "kv_dtype": args.kv_dtype, "mmap": not args.no_mmap}


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "generation",
        "Unset options come from the checkpoint's generation_config.json (greedy decoding for EXAONE 4.0). "
        "With --think and no sampling option, temperature 0.6 and top-p 0.95 are used, "
        "as the model card advises.",
    )
    g.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="stop after N new tokens (default: at the end of the turn or of the context)")
    g.add_argument("--temperature", type=float, default=None, metavar="T", help="sampling temperature; 0 is greedy")
    g.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="nucleus sampling: keep the top tokens of mass P")
    g.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="sample among the K most likely tokens (0: all)")
    g.add_argument("--min-p", type=float, default=None, metavar="P",
                   help="drop tokens less likely than P times the most likely one")
    g.add_argument("--repetition-penalty", type=float, default=None, metavar="R",
                   help="divide the logits of tokens already in the text by R (1: off)")
    g.add_argument("--presence-penalty", type=float, default=None, metavar="X",
                   help="subtract X from the logits of tokens already generated (model card: 1.5 against degeneration)")
    g.add_argument("--frequency-penalty", type=float, default=None, metavar="X",
                   help="subtract X times the count of each token already generated")
    g.add_argument("--seed", type=int, default=None, metavar="S", help="random seed, for repeatable sampling")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop when TEXT is generated (repeatable; TEXT itself is not printed)")
    g.add_argument("--think", action="store_true", help="reasoning mode: the model thinks in a <think> block first")
    g.add_argument("--stats", action="store_true",
                   help="print token counts, cached prompt tokens and speeds to stderr after each answer")
    c = parser.add_argument_group(
        "structured output",
        'The answer must match (needs llguidance: pip install "exaone_cpu[structured]"); give at most one. '
        "With --think the reasoning stays free and the constraint applies to the answer after it.")
    c.add_argument("--json-schema", default=None, metavar="SCHEMA",
                   help="a JSON schema, as JSON text or the path of a .json file")
    c.add_argument("--grammar", default=None, metavar="GRAMMAR",
                   help="a grammar in llguidance's Lark syntax or llama.cpp's GBNF, as text or the path of a file")
    c.add_argument("--regex", default=None, metavar="REGEX", help="a regular expression (Rust syntax)")
    c.add_argument("--choice", action="append", default=None, metavar="TEXT",
                   help="the answer is one of these (repeatable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt; "-" reads it from stdin')
    parser.add_argument("--system", default=None, metavar="TEXT", help="system prompt")
    parser.add_argument("--raw", action="store_true",
                        help="continue PROMPT as plain text, without the chat template (--system and --think ignored)")
    parser.add_argument("--hide-reasoning", action="store_true",
                        help="with --think, print only the answer, not the reasoning before it")
    add_sampling_arguments(parser)
    add_speculative_arguments(parser)


def sampling_options(args: argparse.Namespace, thinking: bool) -> dict[str, Any]:
    """Generation keyword options (for Generator / ChatSession) from the parsed arguments."""
    options = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
        "seed": args.seed,
        "stop_strings": tuple(args.stop) if args.stop else None,
        "json_schema": _text_or_file(args.json_schema, "--json-schema"),
        "grammar": _text_or_file(args.grammar, "--grammar"),
        "regex": args.regex,
        "choices": args.choice,
    }
    if thinking and all(options[k] is None for k in ("temperature", "top_p", "top_k", "min_p")):
        options.update(REASONING_SAMPLING)
    return {k: v for k, v in options.items() if v is not None}


def _text_or_file(value: str | None, option: str) -> str | None:
    """An option's value, or the text of the file it names."""
    if value is None:
        return None
    path = Path(value)
    try:
        if len(value) < 4096 and path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{option}: cannot read {value}: {e}") from None
    return value


def check_arguments(args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.max_new_tokens is not None and args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")


def resolve_model_argument(args: argparse.Namespace) -> str:
    """MODEL (and --gguf) as a local path: a Hub id is looked up in the cache, then downloaded."""
    from ..hub import resolve_model

    return str(resolve_model(args.model, gguf=args.gguf))


def load_generator(args: argparse.Namespace):
    from ..generation import Generator

    generator = Generator.from_pretrained(resolve_model_argument(args), **load_options(args))
    generator.speculative = speculative_option(args, generator.model)
    return generator


def print_stats(result) -> None:
    print(f"[stats] {result.summary()}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    generator = load_generator(args)
    if args.raw:
        ids = generator.tokenizer.encode(prompt)
        thinking = False
    else:
        messages = ([{"role": "system", "content": args.system}] if args.system is not None else [])
        messages.append({"role": "user", "content": prompt})
        thinking = args.think
        ids = generator.encode_chat(messages, enable_thinking=thinking)
    stream = generator.stream(ids, thinking=thinking, on_prefill=PrefillProgress(), **sampling_options(args, thinking))
    out = sys.stdout
    hide = thinking and args.hide_reasoning
    if thinking and not hide:
        out.write("<think>\n")  # opened by the prompt: shown so the reasoning reads as such
    try:
        if hide:  # the parsed stream, answer only (tool calls as the model wrote them)
            for kind, part in stream.deltas():
                if kind == "content":
                    out.write(part)
                elif kind == "tool_call":
                    out.write(tool_call_text(part))
                out.flush()
        else:
            for piece in stream:
                out.write(piece)
                out.flush()
    except KeyboardInterrupt:
        stream.close()
        out.write("\n")
        return 130
    out.write("\n")
    out.flush()
    if args.stats:
        print_stats(stream.result)
    return 0
