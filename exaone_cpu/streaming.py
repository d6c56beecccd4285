"""The text side of the token pipeline: token ids in, text pieces and parsed deltas out.

    IncrementalDetokenizer  token ids -> text, never splitting a UTF-8 character (Korean syllables and
                            emoji often span two tokens), decoding a short window of recent tokens;
    StopMatcher             stop strings over the streamed text, linear time;
    TextPipeline            both, then parsing.OutputParser: what every frontend (Generator,
                            ChatSession, the server) turns a sequence's tokens into.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .parsing import OutputParser, ParsedOutput

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Feed token ids one at a time; `add` returns the text that is now safe to emit.

    The concatenation of every returned piece plus `flush()` equals
    `tokenizer.decode(all_ids, skip_special_tokens=...)`.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        # token_ids[prefix_offset:read_offset] were already emitted and serve as decoding context;
        # token_ids[read_offset:] are pending.
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: int) -> str:
        self.token_ids.append(int(token_id))
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self.token_ids[self._prefix_offset :])
        # A trailing U+FFFD means an incomplete UTF-8 sequence: wait for the next token to complete it.
        if len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR):
            return ""
        piece = full_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.token_ids)
        return piece

    def add_many(self, token_ids: Iterable[int]) -> str:
        return "".join(self.add(t) for t in token_ids)

    def flush(self) -> str:
        """Whatever is still held back (e.g. a truncated character at the end of generation, as U+FFFD)."""
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self.token_ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.token_ids)
        return full_text[len(prefix_text) :]

    @property
    def text(self) -> str:
        """Everything decoded so far, including held-back text."""
        return self._decode(self.token_ids)


def _failure(pattern: str) -> list[int]:
    """KMP failure function: fail[i] is the length of the longest proper border of pattern[: i + 1]."""
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


class StopMatcher:
    """Stop strings over streamed text, in time linear in the text (a KMP automaton per stop string).

    `feed` returns the text that is now safe to emit: everything except a tail that may still become a
    stop string. Generation stops at the first position where a stop string ends; the text is cut
    where that stop string begins (of two ending at the same character, the longer one counts). The
    result does not depend on how the text was split into pieces.
    """

    def __init__(self, stop_strings: Iterable[str] = ()):
        self.stop_strings = tuple(dict.fromkeys(s for s in stop_strings if s))
        self._fail = [_failure(s) for s in self.stop_strings]
        self._state = [0] * len(self.stop_strings)  # chars of each stop string matched at the end of the text
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, text: str) -> str:
        if self.matched is not None or not text:
            return ""
        if not self.stop_strings:
            return text
        buf = self._held + text
        base = len(self._held)
        stops, fails, state = self.stop_strings, self._fail, self._state
        for i, ch in enumerate(text):
            hit = -1
            for j, stop in enumerate(stops):
                k = state[j]
                while k and stop[k] != ch:
                    k = fails[j][k - 1]
                if stop[k] == ch:
                    k += 1
                if k == len(stop):
                    if hit < 0 or len(stop) > len(stops[hit]):
                        hit = j
                    k = fails[j][k - 1]
                state[j] = k
            if hit >= 0:
                self.matched, self._held = stops[hit], ""
                return buf[: base + i + 1 - len(stops[hit])]
        keep = max(state)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held tail, at the end of the text (it did not become a stop string)."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held


class TextPipeline:
    """One sequence's text: tokens are detokenized, cut at the first stop string and parsed.

        text = TextPipeline(tokenizer, stop_strings=["Observation:"], thinking=False, tools=True)
        piece = text.add(token)        # the raw text now safe to emit ("" while something is held back)
        text.take_deltas()             # [("reasoning" | "content", str) | ("tool_call", dict), ...]
                                       # (stream_calls: also "tool_call_begin" / "tool_call_arguments")
        text.finish()                  # at the end; text.output is the ParsedOutput the deltas add up to

    `text` is exactly the concatenation of the pieces add() and finish() returned; the streamed deltas
    add up to `output` whatever the split into tokens (both come from the same incremental parser).
    Stop token ids are the caller's business: they are never given to add().
    """

    def __init__(self, tokenizer: Any, *, stop_strings: Iterable[str] = (), skip_special_tokens: bool = False,
                 thinking: bool = False, tools: bool = True, parse: bool = True, stream_calls: bool = False):
        self.detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
        self.stops = StopMatcher(stop_strings)
        self.parser = OutputParser(thinking=thinking, tools=tools, stream_calls=stream_calls)
        self.parse = parse  # False: raw text only (plain completions), no deltas
        self._pieces: list[str] = []
        self._deltas: list[tuple[str, Any]] = []
        self.finished = False

    @property
    def stop_string(self) -> str | None:
        """The stop string that ended the text, if one did."""
        return self.stops.matched

    @property
    def stopped(self) -> bool:
        return self.stops.matched is not None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    @property
    def output(self) -> ParsedOutput:
        return self.parser.output

    def _pass(self, piece: str) -> str:
        if piece:
            self._pieces.append(piece)
            if self.parse:
                self._deltas += self.parser.feed(piece)
        return piece

    def add(self, token: int) -> str:
        if self.finished or self.stopped:
            return ""
        return self._pass(self.stops.feed(self.detokenizer.add(token)))

    def finish(self) -> str:
        """Ends the text (a character cut off by the end of generation comes out as U+FFFD); returns the
        last raw piece. Idempotent."""
        if self.finished:
            return ""
        self.finished = True
        piece = ""
        if not self.stopped:
            piece = self.stops.feed(self.detokenizer.flush())
            if not self.stopped:
                piece += self.stops.flush()
        self._pass(piece)
        if self.parse:
            self._deltas += self.parser.finish()
        return piece

    def take_deltas(self) -> list[tuple[str, Any]]:
        out, self._deltas = self._deltas, []
        return out
