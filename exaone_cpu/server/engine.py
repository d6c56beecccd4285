"""Continuous batching: one thread steps every active sequence with a single batched forward pass.

Each step feeds every running sequence its next token and, within a token budget, a chunk of a new
request's prompt (chunked prefill), so a long prompt never stalls the streams already running for more
than about one step. New requests join between steps, finished or cancelled ones leave. Each sequence
owns its KV cache, so nothing one request sends reaches another's context; with a prefix cache, a new
request starts from a copy of the longest prefix a finished one computed. The engine knows only token
ids: text, stop strings and parsing live with the request's consumer.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..decoding import FINISH_ERROR, Decoding
from ..kv_cache import KVCache
from ..model import Model
from ..speculative import EMPTY, Speculative, Speculator
from .prefix_cache import PrefixCache

FINISH_CANCELLED = "cancelled"

log = logging.getLogger("exaone_cpu.server")


class QueueFull(RuntimeError):
    """More requests are waiting than the engine accepts."""


class EngineFailed(RuntimeError):
    """The engine thread stopped on an error of its own: nothing more can be served."""


@dataclass(eq=False)
class Sequence:
    """One request as the engine sees it: its Decoding (sampler, limits, stop ids, tokens) and where
    its tokens go. The callbacks run on the engine thread."""

    decoding: Decoding
    on_token: Callable[[int], None]
    on_finish: Callable[[str], None]
    cache: KVCache | None = None
    speculator: Speculator | None = None  # its guesses, when the engine speculates
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache, not computed
    first_token_at: float | None = None  # time.perf_counter() when the first token was sampled
    done: bool = False
    finish_reason: str | None = None  # set by the consumer from the finish event (or a stop string)
    passed: int = 0  # tokens the consumer took into its text (later ones came after a stop string)
    stopped_by_text: bool = False  # the consumer ended it at a stop string
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Asks the engine to drop this sequence at its next step (client gone, stop string seen)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def unfed(self) -> int:
        """Tokens not yet in the KV cache: the rest of the prompt, then 1 (the last token sampled)."""
        return len(self.decoding.token_ids) - self.cache.length


# A step that feeds prompt tokens beside running decodes may take this many times a decode-only step
# (when the budget is automatic): a running stream's gap between tokens stays within that factor.
STALL_RATIO = 2.0
MIN_PROMPT_TOKENS = 4  # per step, however slow prompt tokens look: every prompt keeps moving


class BatchEngine:
    """parallel: sequences in a step at most; max_queue: requests waiting beyond those; batch_tokens:
    prompt tokens per step beside the running decodes (None: as many as keep a step within STALL_RATIO
    times a decode-only step, measured as it runs; all of prefill_chunk when nothing is decoding);
    cache_bytes: the prefix cache's budget (0: off); speculative: speculative decoding for every
    sequence (exaone_cpu.speculative): a decoding sequence's step feeds its last token and its guesses,
    as many as pay given the measured acceptance and what one more row costs the batched step (none
    once the batch is large enough that a row costs about what a token is worth)."""

    def __init__(self, model: Model, *, parallel: int = 4, max_queue: int = 16, batch_tokens: int | None = None,
                 cache_bytes: int = 0, on_failure: Callable[[BaseException], None] | None = None,
                 speculative: Speculative | None = None):
        if parallel < 1 or max_queue < 0:
            raise ValueError("parallel must be >= 1 and max_queue >= 0")
        if batch_tokens is not None and batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        self.model = model
        self.parallel = parallel
        self.max_queue = max_queue
        self.batch_tokens = batch_tokens
        self.prefix_cache = PrefixCache(cache_bytes)
        self.speculative = speculative
        self._pending: collections.deque[Sequence] = collections.deque()
        self._active: list[Sequence] = []
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # batched steps taken (for tests and metrics)
        self.max_batch_seen = 0
        self.prompt_tokens_computed = 0  # prompt tokens fed to the model (cached ones not counted)
        self.tokens_generated = 0
        self.draft_tokens = 0  # guesses checked (speculative decoding)
        self.accepted_draft_tokens = 0  # guesses kept
        self.busy_seconds = 0.0  # in forward steps
        self.decode_step_seconds: float | None = None  # running average of a step without prompt tokens
        self.prompt_token_seconds: float | None = None  # running average cost of one prompt token in a step
        self.failure: BaseException | None = None  # what stopped the engine thread, if anything did
        self.on_failure = on_failure  # called once, on the engine thread, after a failure

    # ---- control ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="exaone-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def healthy(self) -> bool:
        return self.failure is None

    def submit(self, seq: Sequence) -> None:
        if self.failure is not None:
            raise EngineFailed(f"the engine stopped: {type(self.failure).__name__}: {self.failure}")
        with self._lock:
            if len(self._pending) >= self.max_queue + max(0, self.parallel - len(self._active)):
                raise QueueFull(f"{len(self._pending)} requests already waiting")
            self._pending.append(seq)
            self._lock.notify_all()

    @property
    def load(self) -> tuple[int, int]:
        """(active sequences, waiting requests)."""
        with self._lock:
            return len(self._active), len(self._pending)

    def kv_bytes(self) -> int:
        """Bytes of the running sequences' KV caches."""
        with self._lock:
            caches = [s.cache for s in self._active]
        return sum(c.nbytes for c in caches if c is not None)

    # ---- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - a bug of the engine's own: report it, fail everyone
            self.failure = e
            log.exception("the engine stopped")
            with self._lock:
                waiting = list(self._pending)
                self._pending.clear()
            for seq in self._active + waiting:
                try:
                    self._finish(seq, FINISH_ERROR)
                except Exception:  # noqa: BLE001
                    log.exception("could not end a sequence")
            self._active = []
            if self.on_failure is not None:
                self.on_failure(e)

    def _loop(self) -> None:
        while True:
            admitted = []
            with self._lock:
                while not self._stopping and not self._pending and not self._active:
                    self._lock.wait()
                if self._stopping:
                    break
                while self._pending and len(self._active) < self.parallel:
                    admitted.append(self._pending.popleft())
                    self._active.append(admitted[-1])  # counted as active from here on
            for seq in admitted:
                self._admit(seq)
            self._step()
            with self._lock:
                self._active = [s for s in self._active if not s.done]
        for seq in list(self._active) + list(self._pending):
            self._finish(seq, FINISH_CANCELLED)

    def _admit(self, seq: Sequence) -> None:
        """Gives a new sequence its cache: a copy of the longest cached prefix of its prompt, or empty."""
        if seq.cancelled:
            self._finish(seq, FINISH_CANCELLED)
            return
        try:
            prompt = seq.decoding.prompt_ids
            capacity = len(prompt) + min(seq.decoding.max_new_tokens, 256)  # grows by doubling past that
            cache, seq.cached_tokens = self.prefix_cache.lookup(prompt, capacity)
            seq.cache = cache if cache is not None else self.model.new_cache(capacity)
            if self.speculative is not None:
                seq.speculator = Speculator(self.speculative, self.model.prefill_chunk)
        except Exception:  # noqa: BLE001 - a request must never take the engine down
            log.exception("could not start a sequence")
            self._finish(seq, FINISH_ERROR)

    def _prompt_budget(self, decoding: int) -> int:
        """Prompt tokens this step may feed beside `decoding` running sequences."""
        chunk = self.model.prefill_chunk
        if self.batch_tokens is not None:
            return self.batch_tokens
        if decoding == 0:
            return chunk  # nobody waits: the most efficient chunk
        if self.decode_step_seconds is None or not self.prompt_token_seconds:
            return MIN_PROMPT_TOKENS  # a first measurement
        fits = (STALL_RATIO - 1.0) * self.decode_step_seconds / self.prompt_token_seconds
        return int(min(max(fits, MIN_PROMPT_TOKENS), chunk))

    def _step(self) -> None:
        live = []
        for s in self._active:  # each flag read once: a cancel landing now waits for the next step
            if s.cancelled:
                self._finish(s, FINISH_CANCELLED)
            elif not s.done:
                live.append(s)
        batch, feeds, wants, drafts = [], [], [], []
        decoding = [s for s in live if s.unfed == 1]
        for s in decoding:  # the last token, and the sequence's guesses after it
            draft = self._draft(s, len(decoding))
            batch.append(s)
            feeds.append(np.concatenate([s.decoding.token_ids[-1:], draft]) if len(draft) else s.decoding.token_ids[-1:])
            wants.append(1 + len(draft))
            drafts.append(draft)
        guessed = sum(len(d) for d in drafts)
        budget = self._prompt_budget(len(decoding))
        if guessed and self.batch_tokens is None:  # guesses are rows too: the step stays within its budget
            budget = max(budget - guessed, MIN_PROMPT_TOKENS)
        prompt_tokens = 0
        for s in live:  # prompts in arrival order: the oldest finishes its prefill first
            unfed = s.unfed
            if unfed == 1:
                continue
            n = min(unfed, budget - prompt_tokens, self.model.prefill_chunk)
            if n <= 0:
                break
            start = s.cache.length
            batch.append(s)
            feeds.append(s.decoding.token_ids[start : start + n])
            wants.append(1 if n == unfed else 0)  # the prompt's last token: its logits pick the first new token
            drafts.append(EMPTY)
            prompt_tokens += n
        if not batch:
            return
        lengths = [s.cache.length for s in batch]
        started = time.perf_counter()
        try:
            logits = self.model.forward_batch(feeds, [s.cache for s in batch], rows=wants)
            ends = np.cumsum(wants)
            results = [(s, logits[e - w : e]) for s, w, e in zip(batch, wants, ends)]
        except Exception:  # noqa: BLE001 - find the sequence that fails: step each alone
            log.exception("a batched step failed; stepping its %d sequences one by one", len(batch))
            results = []
            for s, ids, length, want in zip(batch, feeds, lengths, wants):
                s.cache.length = length  # as before the step: its tokens go in again
                try:
                    results.append((s, self.model.forward_batch([ids], [s.cache], rows=[want])))
                except Exception:  # noqa: BLE001
                    log.exception("a sequence failed in its step")
                    self._finish(s, FINISH_ERROR)
                    results.append((s, None))
        else:
            self._measure(time.perf_counter() - started, len(decoding), prompt_tokens + guessed)
        self.busy_seconds += time.perf_counter() - started
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(batch))
        # a prompt's last token may ride in a decode slot (one token left): counted as the prompt's
        self.prompt_tokens_computed += sum(max(0, min(len(ids), s.decoding.prompt_tokens - length))
                                           for s, ids, length in zip(batch, feeds, lengths))
        for (s, rows), draft in zip(results, drafts):
            if rows is None or not len(rows) or s.done:
                continue
            try:
                self._accept(s, rows, draft)
            except Exception:  # noqa: BLE001 - one request's failure must not take the others down
                log.exception("a sequence failed to pick its token")
                self._finish(s, FINISH_ERROR)

    def _draft(self, seq: Sequence, decoding: int) -> np.ndarray:
        """The guesses to verify after seq's last token this step (none without a speculator). A guess
        pays when the tokens it is expected to add are worth more than its row costs the step: the
        engine measures a row's cost and a decode step's, shared by the `decoding` sequences."""
        spec = seq.speculator
        if spec is None:
            return EMPTY
        d = seq.decoding
        step = None if self.decode_step_seconds is None else self.decode_step_seconds / max(decoding, 1)
        try:
            return spec.draft(d.token_ids, d.max_new_tokens - d.completion_tokens - 1, step_seconds=step,
                              extra_seconds=self.prompt_token_seconds)
        except Exception:  # noqa: BLE001 - a drafter's failure costs the sequence its guesses only
            log.exception("a drafter failed; the sequence goes on without guesses")
            seq.speculator = None
            return EMPTY

    def _measure(self, seconds: float, decoding: int, prompt_tokens: int) -> None:
        """Running averages of what a decode-only step and one prompt token cost (the prompt budget)."""
        if prompt_tokens == 0:
            d = self.decode_step_seconds
            self.decode_step_seconds = seconds if d is None else 0.8 * d + 0.2 * seconds
            return
        if decoding and self.decode_step_seconds is not None:
            per_token = max(seconds - self.decode_step_seconds, 0.0) / prompt_tokens
        elif not decoding:
            per_token = seconds / prompt_tokens  # an upper bound: the step also read every weight once
        else:
            return
        t = self.prompt_token_seconds
        self.prompt_token_seconds = per_token if t is None else 0.7 * t + 0.3 * per_token

    def _accept(self, seq: Sequence, rows: np.ndarray, draft: np.ndarray) -> None:
        """Picks seq's next token from rows[0]; while each pick is the guess rows[i] followed, the next
        token from rows[i + 1]. The guesses after the first wrong one leave the cache."""
        decoding = seq.decoding
        tokens: list[int] = []
        for i, row in enumerate(rows):
            tokens.append(decoding.accept(row))
            if decoding.finished or i >= len(draft) or tokens[-1] != draft[i]:
                break
        if len(draft):
            kept = next((i for i, t in enumerate(tokens[: len(draft)]) if t != draft[i]), min(len(tokens), len(draft)))
            seq.speculator.end_round(len(draft), kept, seq.cache, len(decoding.token_ids) - 1)
            self.draft_tokens += len(draft)
            self.accepted_draft_tokens += kept
        self.tokens_generated += len(tokens)
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        for i, token in enumerate(tokens):
            if decoding.stop_token is None or i < len(tokens) - 1:  # stop tokens are not passed on
                seq.on_token(token)
        if decoding.finished:
            self._finish(seq, decoding.finish_reason)

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.done:
            return
        seq.done = True
        if seq.cache is not None and reason != FINISH_ERROR:
            try:  # what it computed stays for a request that shares a prefix with it
                self.prefix_cache.store(seq.decoding.token_ids, seq.cache)
            except Exception:  # noqa: BLE001
                log.exception("could not keep a finished sequence's cache")
        seq.cache = None  # its own reference goes at once
        try:
            seq.on_finish(reason)
        except Exception:  # noqa: BLE001 - e.g. the consumer's event loop is gone: nothing to tell
            log.exception("could not report the end of a sequence")
