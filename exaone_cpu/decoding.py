"""The token side of the pipeline: one sequence's logits -> next token, and when it is done.

Every frontend drives a `Decoding` per sequence: the library's TokenStream (Model.generate, Generator,
ChatSession, the facade) one step at a time, the server's batch engine many at once with one batched
forward per step. It owns the sequence's sampler (penalty counts, seeded generator), its token ids,
its limits and stop token ids, and the optional log-probabilities; it does no model work itself.
The text side is streaming.TextPipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sampling import Sampler, SamplingParams, logprobs

# finish reasons, one definition for every frontend
FINISH_STOP = "stop"  # a stop token id or stop string
FINISH_LENGTH = "length"  # max_new_tokens or the end of the context
FINISH_TOOL_CALLS = "tool_calls"  # stopped at the end of the turn with at least one well-formed tool call
FINISH_ABORT = "abort"  # closed early by the caller (the server: the client went away)
FINISH_ERROR = "error"  # the step failed for this sequence

MAX_TOP_LOGPROBS = 20  # as OpenAI


def eos_token_ids(config: Any, defaults: Any = None, tokenizer: Any = None) -> tuple[int, ...]:
    """The ids that end a turn by default, for every frontend: config.json's eos ids, then
    generation_config.json's (`defaults`), then the tokenizer's eos token, without repeats."""
    ids = list(config.eos_token_ids) + (list(defaults.eos_token_ids) if defaults is not None else [])
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(dict.fromkeys(int(i) for i in ids))


@dataclass(frozen=True)
class TokenLogprob:
    """The model's log-probability of a chosen token (log_softmax of the raw logits) and the most likely
    alternatives as (token id, logprob), most likely first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class Decoding:
    """One sequence's token state.

        d = Decoding(prompt_ids, vocab_size, max_new_tokens=64, sampling=SamplingParams(temperature=0.6))
        while not d.finished:
            token = d.accept(logits)        # picks, counts and records the token; sets finish_reason
            logits = <forward of token>

    stop_token_ids end the sequence (the token is recorded, stop_token says which); min_new_tokens
    forbids them until that many tokens were generated. logprobs=N records a TokenLogprob per token
    with the top N alternatives (0: the chosen token's only; None: nothing).
    """

    def __init__(self, prompt_ids: np.ndarray, vocab_size: int, *, max_new_tokens: int,
                 sampling: SamplingParams | None = None, stop_token_ids: Iterable[int] = (),
                 min_new_tokens: int = 0, logprobs: int | None = None):
        prompt = np.asarray(prompt_ids, np.int64).reshape(-1)
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {logprobs}")
        self.prompt_tokens = len(prompt)
        self.max_new_tokens = max(int(max_new_tokens), 0)
        self.min_new_tokens = int(min_new_tokens)
        self.sampling = sampling or SamplingParams()
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)
        self._stop_array = np.fromiter(self.stop_token_ids, np.int64, len(self.stop_token_ids))
        self._ids = np.empty(self.prompt_tokens + self.max_new_tokens, np.int64)  # prompt + generated
        self._ids[: self.prompt_tokens] = prompt
        self._n = self.prompt_tokens
        self.sampler = Sampler(self.sampling, vocab_size, prompt)
        self.top_logprobs = logprobs
        self.logprobs: list[TokenLogprob] | None = None if logprobs is None else []
        self.finish_reason: str | None = None if self.max_new_tokens > 0 else FINISH_LENGTH
        self.stop_token: int | None = None

    @property
    def token_ids(self) -> np.ndarray:
        """Prompt followed by every token generated so far (a view)."""
        return self._ids[: self._n]

    @property
    def prompt_ids(self) -> np.ndarray:
        return self._ids[: self.prompt_tokens]

    @property
    def new_token_ids(self) -> np.ndarray:
        return self._ids[self.prompt_tokens : self._n]

    @property
    def completion_tokens(self) -> int:
        """Tokens generated, a final stop token included."""
        return self._n - self.prompt_tokens

    @property
    def last_token(self) -> int:
        return int(self._ids[self._n - 1])

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def stop(self, reason: str = FINISH_STOP) -> None:
        """Ends the sequence early (a stop string matched, the caller gave up); the first reason stays."""
        if self.finish_reason is None:
            self.finish_reason = reason

    def accept(self, logits: np.ndarray) -> int:
        """The next token from this position's raw logits: sampled, counted, recorded."""
        if self.finished:
            raise RuntimeError(f"the sequence already finished ({self.finish_reason})")
        early = self.completion_tokens < self.min_new_tokens and self._stop_array.size
        token = self.sampler.sample(logits, banned=self._stop_array if early else None)
        self.sampler.accept(token)
        if self.logprobs is not None:
            value, top = logprobs(logits, token, self.top_logprobs)
            self.logprobs.append(TokenLogprob(token, value, tuple(top)))
        self._ids[self._n] = token
        self._n += 1
        if token in self.stop_token_ids:
            self.finish_reason, self.stop_token = FINISH_STOP, token
        elif self.completion_tokens >= self.max_new_tokens:
            self.finish_reason = FINISH_LENGTH
        return token
