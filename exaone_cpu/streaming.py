"""Incremental detokenization for streaming output.

A byte-level BPE token can end in the middle of a UTF-8 character (Korean
syllables and emoji often span two tokens), and decoding such a prefix yields
U+FFFD. The detokenizer only emits text once the decoded tail is complete, and
decodes a short window of recent tokens rather than the whole sequence each step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
