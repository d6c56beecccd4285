"""The token side of the pipeline: one sequence's logits -> next token, and when it is done.

Every frontend drives a `Decoding` per sequence: the library's TokenStream (Model.generate, Generator,
ChatSession, the facade) one step at a time, the server's batch engine many at once with one batched
forward per step. A Decoding owns the sequence's sampler (penalty counts, seeded generator), its
token ids, its limits and stop token ids, and the optional log-probabilities; it does no model work.
TokenStream adds the forward passes (prefill, then one token per step) and a PromptCache that keeps
the KV of the previous turn. The text side is streaming.TextPipeline.

Cache invariant: after every step the KV cache holds the prompt and every generated token but the
last one (a token is fed to the model only when the next one is needed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .sampling import Sampler, SamplingParams, logprobs
from .speculative import Speculator

if TYPE_CHECKING:
    from .constraints import TokenConstraint
    from .kv_cache import KVCache
    from .model import Model
    from .speculative import Speculative

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
    with the top N alternatives (0: the chosen token's only; None: nothing). constraint (a
    constraints.TokenConstraint) masks every token outside its grammar before sampling, and the
    sequence stops ("stop", no stop token) where the grammar is complete.
    """

    def __init__(self, prompt_ids: np.ndarray, vocab_size: int, *, max_new_tokens: int,
                 sampling: SamplingParams | None = None, stop_token_ids: Iterable[int] = (),
                 min_new_tokens: int = 0, logprobs: int | None = None, constraint: TokenConstraint | None = None):
        prompt = np.asarray(prompt_ids, np.int64).reshape(-1)
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {logprobs}")
        self.prompt_tokens = len(prompt)
        self.max_new_tokens = max(int(max_new_tokens), 0)
        self.min_new_tokens = int(min_new_tokens)
        self.sampling = sampling or SamplingParams()
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)
        self._stop_array = np.fromiter(self.stop_token_ids, np.int64, len(self.stop_token_ids))
        # prompt + generated, grown by doubling: max_new_tokens may be the whole context
        self._ids = np.empty(self.prompt_tokens + min(self.max_new_tokens, 4096), np.int64)
        self._ids[: self.prompt_tokens] = prompt
        self._n = self.prompt_tokens
        self.sampler = Sampler(self.sampling, vocab_size, prompt)
        self.top_logprobs = logprobs
        self.logprobs: list[TokenLogprob] | None = None if logprobs is None else []
        self.finish_reason: str | None = None if self.max_new_tokens > 0 else FINISH_LENGTH
        self.stop_token: int | None = None
        self.constraint = constraint

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
        allowed = None if self.constraint is None else self.constraint.mask()
        token = self.sampler.sample(logits, banned=self._stop_array if early else None, allowed=allowed)
        self.sampler.accept(token)
        if self.constraint is not None:
            self.constraint.consume(token)
        if self.logprobs is not None:
            value, top = logprobs(logits, token, self.top_logprobs)
            self.logprobs.append(TokenLogprob(token, value, tuple(top)))
        if self._n == len(self._ids):
            grown = np.empty(min(2 * len(self._ids), self.prompt_tokens + self.max_new_tokens), np.int64)
            grown[: self._n] = self._ids
            self._ids = grown
        self._ids[self._n] = token
        self._n += 1
        if token in self.stop_token_ids:
            self.finish_reason, self.stop_token = FINISH_STOP, token
        elif self.constraint is not None and self.constraint.done:
            self.finish_reason = FINISH_STOP
        elif self.completion_tokens >= self.max_new_tokens:
            self.finish_reason = FINISH_LENGTH
        return token


# ---- the prompt cache ---------------------------------------------------------------------------------------


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PromptCache:
    """Owns one KVCache and knows which token ids it holds, so that a prompt sharing a prefix with what
    was computed before (the previous turn of a chat) only computes the rest.

    A sliding-window layer keeps a ring of window + prefill_chunk - 1 positions, so the cache can go
    back only as far as the ring still holds the window before the cut (KVCache.truncate decides);
    further back it is recomputed from scratch. One stream uses the cache at a time: starting a new
    stream on it ends the use by the previous one.
    """

    def __init__(self, model: Model):
        self.model = model
        self.cache: KVCache | None = None
        self._ids = np.zeros(0, np.int64)  # the ids fed to the cache (a prefix of it is valid, see token_ids)
        self._owner: TokenStream | None = None

    @property
    def token_ids(self) -> np.ndarray:
        """The token ids the cache holds now."""
        if self._owner is not None:
            self._ids = self._owner.token_ids
        length = 0 if self.cache is None else self.cache.length
        return self._ids[:length]

    def reset(self) -> None:
        self.cache, self._ids, self._owner = None, np.zeros(0, np.int64), None

    def acquire(self, owner: TokenStream, prompt: np.ndarray) -> tuple[KVCache, int]:
        """A cache holding the longest reusable prefix of `prompt` (always leaving at least the last prompt
        token to compute, whose logits pick the first new token) and that prefix's length."""
        held = self.token_ids
        reuse = min(common_prefix_length(held, prompt), len(prompt) - 1)
        # truncate also drops K/V that an interrupted forward may have written past cache.length
        if self.cache is None or not self.cache.truncate(reuse):
            self.cache, reuse = self.model.new_cache(), 0
        self._owner = owner
        return self.cache, reuse

    def owned_by(self, stream: TokenStream) -> bool:
        return self._owner is stream


# ---- tokens -------------------------------------------------------------------------------------------------


@dataclass
class _Round:
    """A verification forward's logits: rows[i] follows draft[:i]; rows[used] picks the next token."""

    draft: np.ndarray  # [k] guessed tokens
    rows: np.ndarray  # [k + 1, vocab]
    used: int = 0


class TokenStream:
    """Iterator over the new token ids of one generation (the prefill runs on the first step): a
    decoding.Decoding driven by Model.forward, one token at a time, with an optional PromptCache.

    With `speculative` (exaone_cpu.speculative) a step may feed the last token and a few guessed
    ones in one forward; the tokens still come out one per step, each picked from its own position's
    logits, and the guesses after the first wrong one are dropped from the cache.

    After each step `logits` is the raw float32 logits [vocab] the token was picked from. When the
    iteration ends, finish_reason is "stop" (stop_token holds the id) or "length".
    """

    def __init__(self, model: Model, prompt_ids: Sequence[int] | np.ndarray, *,
                 max_new_tokens: int | None = None, sampling: SamplingParams | None = None,
                 stop_token_ids: Iterable[int] = (), min_new_tokens: int = 0,
                 prompt_cache: PromptCache | None = None, logprobs: int | None = None,
                 on_prefill: Callable[[int, int], None] | None = None, constraint: TokenConstraint | None = None,
                 speculative: Speculative | None = None):
        self.model = model
        prompt = model.check_token_ids(prompt_ids)
        room = model.config.max_position_embeddings - len(prompt)
        limit = room if max_new_tokens is None else min(int(max_new_tokens), room)
        self.decoding = Decoding(prompt, model.config.vocab_size, max_new_tokens=limit, sampling=sampling,
                                 stop_token_ids=stop_token_ids, min_new_tokens=min_new_tokens, logprobs=logprobs,
                                 constraint=constraint)
        self._prompt_cache = prompt_cache
        self.on_prefill = on_prefill  # (done, total) prompt tokens, after each prefill chunk
        self._cache: KVCache | None = None
        self.cached_tokens = 0
        self.logits: np.ndarray | None = None
        self.prefill_seconds = 0.0  # prefill and the first token: time to first token
        self.decode_seconds = 0.0  # every later step
        self.speculator = None if speculative is None else Speculator(speculative, model.prefill_chunk)
        self._round: _Round | None = None

    # ---- state (the Decoding's) ----

    sampling = property(lambda self: self.decoding.sampling)
    max_new_tokens = property(lambda self: self.decoding.max_new_tokens)
    min_new_tokens = property(lambda self: self.decoding.min_new_tokens)
    stop_token_ids = property(lambda self: self.decoding.stop_token_ids)
    prompt_tokens = property(lambda self: self.decoding.prompt_tokens)
    token_ids = property(lambda self: self.decoding.token_ids, doc="Prompt followed by every token so far (a view).")
    new_token_ids = property(lambda self: self.decoding.new_token_ids)
    completion_tokens = property(lambda self: self.decoding.completion_tokens)
    finish_reason = property(lambda self: self.decoding.finish_reason)
    stop_token = property(lambda self: self.decoding.stop_token)
    finished = property(lambda self: self.decoding.finished)
    logprobs = property(lambda self: self.decoding.logprobs)

    @property
    def draft_tokens(self) -> int:
        """Guessed tokens checked by the model (speculative decoding)."""
        return 0 if self.speculator is None else self.speculator.drafted

    @property
    def accepted_draft_tokens(self) -> int:
        """Guessed tokens that were kept."""
        return 0 if self.speculator is None else self.speculator.accepted

    def stop(self, reason: str = FINISH_STOP) -> None:
        """Ends the generation early (a stop string matched, the caller gave up)."""
        self.decoding.stop(reason)
        if self._round is not None:
            self._end_round(self._round.used)

    # ---- the loop ----

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> int:
        if self.finished:
            raise StopIteration
        if self._prompt_cache is not None and self._cache is not None and not self._prompt_cache.owned_by(self):
            raise RuntimeError("this generation's PromptCache was taken over by a newer generation")
        start = time.perf_counter()
        if self._cache is None:
            self.logits = self._prefill()
        elif self._round is not None:  # the guess so far was right: this position's logits are there
            self.logits = self._round.rows[self._round.used]
        else:
            self.logits = self._decode_step()
        token = self.decoding.accept(self.logits)
        if self._round is not None:
            self._check_guess(token)
        elapsed = time.perf_counter() - start
        if self.completion_tokens == 1:
            self.prefill_seconds += elapsed
        else:
            self.decode_seconds += elapsed
        return token

    def _decode_step(self) -> np.ndarray:
        """The logits after the last token; with a speculator, also after each guessed token."""
        spec, last = self.speculator, self.token_ids[-1:]
        room = self.max_new_tokens - self.completion_tokens - 1  # guesses past the limit are wasted
        draft = spec.draft(self.token_ids, room) if spec is not None else np.zeros(0, np.int64)
        started = time.perf_counter()
        if not len(draft):
            logits = self.model.forward(last, self._cache)
        else:
            rows = self.model.forward(np.concatenate([last, draft]), self._cache, all_logits=True)
            self._round = _Round(draft, rows)
            logits = rows[0]
        if spec is not None:
            spec.timed(len(draft) + 1, time.perf_counter() - started)
        return logits

    def _check_guess(self, token: int) -> None:
        """After picking `token` from the round's rows: go on to the next row while the guess holds."""
        r = self._round
        if r.used < len(r.draft) and token == r.draft[r.used]:
            r.used += 1  # the next row followed exactly this token
            if not self.finished:
                return
        self._end_round(r.used)

    def _end_round(self, kept: int) -> None:
        """Drops the rest of the round: the cache goes back to every token but the last."""
        r, self._round = self._round, None
        self.speculator.end_round(len(r.draft), kept, self._cache, len(self.token_ids) - 1)

    def _prefill(self) -> np.ndarray:
        prompt = self.decoding.prompt_ids
        if self._prompt_cache is not None:
            self._cache, self.cached_tokens = self._prompt_cache.acquire(self, prompt)
        else:  # room for the prompt and a start (the cache grows by doubling past it): numpy backs large
            # arrays with huge pages, so a big up-front buffer costs 2 MB zeroed per head and layer on
            # its first token (about 1 GB and 2 s for the 1.2B at 8192 positions)
            self._cache = self.model.new_cache(self.prompt_tokens + min(self.max_new_tokens, 256))
        progress = {} if self.on_prefill is None else {"on_progress": self.on_prefill}
        logits = self.model.forward(prompt[self.cached_tokens :], self._cache, **progress)
        if self.speculator is not None:  # a draft model reads the prompt now, not in the first round
            self.speculator.prefill(prompt)
        return logits
