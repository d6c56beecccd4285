"""Continuous batching: one thread steps every active sequence with a single batched forward pass.

New requests are prefilled between steps and join the batch; finished or cancelled ones leave it.
Each sequence owns its KV cache, so nothing one request sends reaches another's context. The engine
knows only token ids: text, stop strings and parsing live with the request's consumer.
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
    prefill_seconds: float = 0.0
    first_token_at: float | None = None  # time.perf_counter() when the first token was sampled
    done: bool = False
    finish_reason: str | None = None  # set by the consumer from the finish event (or a stop string)
    passed: int = 0  # tokens the consumer took into its text (later ones came after a stop string)
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Asks the engine to drop this sequence at its next step (client gone, stop string seen)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class BatchEngine:
    def __init__(self, model: Model, *, parallel: int = 4, max_queue: int = 16,
                 on_failure: Callable[[BaseException], None] | None = None):
        if parallel < 1 or max_queue < 0:
            raise ValueError("parallel must be >= 1 and max_queue >= 0")
        self.model = model
        self.parallel = parallel
        self.max_queue = max_queue
        self._pending: collections.deque[Sequence] = collections.deque()
        self._active: list[Sequence] = []
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # batched decode steps taken (for tests and metrics)
        self.max_batch_seen = 0
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
            with self._lock:
                while not self._stopping and not self._pending and not self._active:
                    self._lock.wait()
                if self._stopping:
                    break
                admitted = []
                while self._pending and len(self._active) + len(admitted) < self.parallel:
                    admitted.append(self._pending.popleft())
            for seq in admitted:
                self._prefill(seq)
            self._active = [s for s in self._active if not s.done]
            if self._active:
                self._step()
                self._active = [s for s in self._active if not s.done]
        for seq in list(self._active) + list(self._pending):
            self._finish(seq, FINISH_CANCELLED)

    def _prefill(self, seq: Sequence) -> None:
        if seq.cancelled:
            self._finish(seq, FINISH_CANCELLED)
            return
        self._active.append(seq)  # counted as active from here on; _run drops it if it ends now
        try:
            start = time.perf_counter()
            seq.cache = self.model.new_cache()
            logits = self.model.forward(seq.decoding.prompt_ids, seq.cache)
            seq.prefill_seconds = time.perf_counter() - start
            self._accept(seq, logits)
        except Exception:  # noqa: BLE001 - a request must never take the engine down
            self._finish(seq, FINISH_ERROR)

    def _step(self) -> None:
        batch = []
        for s in self._active:  # each flag read once: a cancel landing now waits for the next step
            if s.cancelled:
                self._finish(s, FINISH_CANCELLED)
            elif not s.done:
                batch.append(s)
        if not batch:
            return
        try:
            logits = self.model.forward_batch([[s.decoding.last_token] for s in batch], [s.cache for s in batch])
        except Exception:  # noqa: BLE001 - find the sequence that fails: step each alone
            log.exception("a batched step failed; stepping its %d sequences one by one", len(batch))
            logits = []
            for s in batch:
                try:
                    logits.append(self.model.forward_batch([[s.decoding.last_token]], [s.cache])[0])
                except Exception:  # noqa: BLE001
                    self._finish(s, FINISH_ERROR)
            batch = [s for s in batch if not s.done]
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(batch))
        for s, row in zip(batch, logits):
            try:
                self._accept(s, row)
            except Exception:  # noqa: BLE001 - one request's failure must not take the others down
                self._finish(s, FINISH_ERROR)

    def _accept(self, seq: Sequence, logits: np.ndarray) -> None:
        decoding = seq.decoding
        token = decoding.accept(logits)
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        if decoding.stop_token is None:  # stop tokens are not passed on
            seq.on_token(token)
        if decoding.finished:
            self._finish(seq, decoding.finish_reason)

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.done:
            return
        seq.done = True
        seq.cache = None  # frees the slot's memory at once
        try:
            seq.on_finish(reason)
        except Exception:  # noqa: BLE001 - e.g. the consumer's event loop is gone: nothing to tell
            log.exception("could not report the end of a sequence")
