"""The `exaone-cpu` command: one subcommand per module in exaone_cpu/commands.

Each command module defines HELP (one line), add_arguments(parser) and run(args) -> int.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module in exaone_cpu.commands
COMMANDS = {}


def _register() -> None:
    for name, module in (
        ("generate", "generate"),
        ("chat", "chat"),
        ("quantize", "quantize"),
        ("bench", "bench"),
        ("eval", "eval"),
        ("serve", "serve"),
    ):
        try:
            COMMANDS[name] = importlib.import_module(f"exaone_cpu.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"exaone_cpu.commands.{module}":
                raise  # a real missing dependency inside an existing command


def build_parser() -> argparse.ArgumentParser:
    _register()
    parser = argparse.ArgumentParser(prog="exaone-cpu", description="Run EXAONE 4.0 models on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"exaone-cpu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
