"""`exaone-cpu chat MODEL`: an interactive, streaming terminal chat.

Each turn reuses the KV cache of the previous one (only the new part of the conversation is computed).
Each input line is a user message, unless it is one of COMMANDS. Answers go to stdout; notices,
the input prompt and statistics to stderr.
"""

from __future__ import annotations

import argparse
import sys

from ..parsing import tool_call_text
from ..progress import PrefillProgress
from .generate import (add_model_arguments, add_sampling_arguments, add_speculative_arguments, check_arguments,
                       load_generator, print_stats, sampling_options)

HELP = "Chat with the model in the terminal (streaming, with reasoning mode and prompt caching)."

COMMANDS = {
    "/think": "switch reasoning mode on or off (the model thinks in a <think> block before answering)",
    "/show": "switch showing the reasoning text on or off",
    "/clear": "start a new conversation (the system prompt stays)",
    "/help": "list these commands",
    "/exit": "quit (also /quit, Ctrl-D, or end of input)",
}

DIM, RESET = "\x1b[2m", "\x1b[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "commands during the chat:\n" + "\n".join(f"  {c:<8} {h}" for c, h in COMMANDS.items()) + (
        "\n\nCtrl-C while the model writes stops that answer; the partial answer stays in the conversation."
    )
    add_model_arguments(parser)
    parser.add_argument("--system", default=None, metavar="TEXT", help="system prompt for the whole conversation")
    parser.add_argument("--show-reasoning", action="store_true",
                        help="show the reasoning text in reasoning mode (default: hidden; toggle with /show)")
    add_sampling_arguments(parser)
    add_speculative_arguments(parser)


class _Terminal:
    """Writes the answers to stdout and everything else (notices, prompts, statistics) to stderr."""

    def __init__(self):
        self.out = sys.stdout
        self.interactive = sys.stdin.isatty()
        self.color = self.out.isatty()

    def notice(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def read(self) -> str | None:
        """The next input line, or None at the end of input."""
        if self.interactive:
            try:
                return input(">>> ")
            except EOFError:
                return None
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def write(self, text: str, dim: bool = False) -> None:
        if not text:
            return
        self.out.write(f"{DIM}{text}{RESET}" if dim and self.color else text)
        self.out.flush()


def _answer(session, term: _Terminal, text: str, show_reasoning: bool, options: dict, stats: bool) -> None:
    thinking = session.thinking
    stream = session.send(text, on_prefill=PrefillProgress(), **options)
    started_content = False

    def show(kind, part) -> None:
        nonlocal started_content
        if kind == "reasoning":
            if show_reasoning:
                term.write(part, dim=True)
            return
        if kind == "tool_call":
            part = tool_call_text(part)
        if not started_content:
            if thinking and show_reasoning:
                term.write("\n</think>\n\n", dim=True)
            elif thinking and term.color:
                term.write("\r\x1b[K")  # erase the "thinking" indicator
            started_content = True
        term.write(part)

    if thinking and show_reasoning:
        term.write("<think>\n", dim=True)
    elif thinking and term.color:
        term.write("(thinking...)", dim=True)
    try:
        for kind, part in stream.deltas():
            show(kind, part)
    except KeyboardInterrupt:
        stream.close()
        term.write("\n")
        term.notice("[interrupted]")
    term.write("\n")
    if stats and stream.result is not None:
        print_stats(stream.result)


def run(args: argparse.Namespace) -> int:
    from ..generation import ChatSession

    check_arguments(args)
    generator = load_generator(args)
    session = ChatSession(generator, system=args.system, thinking=args.think)
    show_reasoning = args.show_reasoning
    term = _Terminal()
    if term.interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    term.notice(f"Chatting with {args.model}. Type /help for commands, /exit or Ctrl-D to quit. "
                f"Reasoning is {'on' if session.thinking else 'off'}.")
    while True:
        try:
            line = term.read()
        except KeyboardInterrupt:
            term.notice("")
            continue
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        command = text.split()[0].lower() if text.startswith("/") else None
        if command in ("/exit", "/quit"):
            break
        if command == "/think":
            session.thinking = not session.thinking
            term.notice(f"[reasoning {'on' if session.thinking else 'off'}]")
        elif command == "/show":
            show_reasoning = not show_reasoning
            term.notice(f"[showing reasoning {'on' if show_reasoning else 'off'}]")
        elif command == "/clear":
            session.clear()
            term.notice("[conversation cleared]")
        elif command == "/help":
            term.notice("\n".join(f"  {c:<8} {h}" for c, h in COMMANDS.items()))
        elif command is not None:
            term.notice(f"[unknown command {command}; /help lists the commands]")
        else:
            _answer(session, term, text, show_reasoning, sampling_options(args, session.thinking), args.stats)
    return 0
