"""`exaone-quantize SRC DST` (also `exaone-cpu quantize`): write an int8 / int4 copy of a checkpoint.

DST is an ordinary checkpoint directory that exaone_cpu.load() memory-maps with no repacking:
quantized safetensors (format_version in their metadata), config.json with a quantization_config
block, and the tokenizer, chat template and generation config copied from SRC. Formats and error
bounds: docs/quantization.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

HELP = "Quantize a checkpoint to int8 or int4 (writes a new checkpoint directory)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="Hugging Face checkpoint directory (f32, bf16 or f16), or its Hub id (from the cache first)")
    parser.add_argument("dst", metavar="DST", help="directory to write (must not exist unless --force)")
    parser.add_argument("--bits", type=int, choices=(8, 4), required=True, help="weight bits of the projections")
    parser.add_argument("--group-size", type=int, default=None, metavar="N",
                        help="weights per f16 scale: 32, 64 or 128, or 0 for one scale per row (int8 only); "
                             "default 32 for int8, 64 for int4")
    parser.add_argument("--head", choices=("int8", "int4", "bf16"), default="int8",
                        help="format of the embedding / lm_head (default int8)")
    parser.add_argument("--asym", action="store_true", help="int4 with a scale and a min per group")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--shard-size", type=int, default=400, metavar="MB",
                        help="largest safetensors file to write, in MiB (default 400)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for quantizing (default: every CPU this process may use)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress (a bar on a terminal, else a line per tenth of the work)")


def run(args: argparse.Namespace) -> int:
    from ..hub import resolve_model
    from ..loading import set_threads
    from ..quant import QuantSpec, quantize_checkpoint

    spec = QuantSpec(bits=args.bits, group_size=args.group_size, asym=args.asym, head=args.head)
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1 MiB, got {args.shard_size}")
    set_threads(args.threads)
    log = None if args.quiet else (lambda msg: print(msg, flush=True))
    quantize_checkpoint(resolve_model(args.src), args.dst, spec, force=args.force, shard_bytes=args.shard_size * 2**20, log=log,
                        progress=False if args.quiet else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `exaone-quantize` entry point."""
    parser = argparse.ArgumentParser(prog="exaone-quantize", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    # SIGTERM (a supervisor, `kill`) unwinds like Ctrl-C, so the temporary output directory is removed
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"exaone-quantize: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
