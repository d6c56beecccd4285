"""KV caches of finished requests, kept so that a later request sharing a prefix with one of them (the
same system prompt, the conversation so far, the same prompt again) computes only the rest.

Each entry is a finished sequence's KVCache and the token ids it holds. A lookup copies the longest
matching prefix out of an entry into a new cache (entries stay unchanged, so concurrent requests can
share one); a finished sequence's cache is stored as a new entry and replaces the entries it extends (and is
dropped when an entry already extends it, in a model without sliding-window layers).
Entries are evicted least recently used first when their bytes exceed the budget.

Sliding-window layers keep a ring of the last window + prefill_chunk - 1 positions, so an entry whose
sequence ran further than that past the shared prefix cannot give that prefix back: the lookup then
tries the next entry, and computes from the start if none can (KVCache.copy_prefix decides).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np

from ..decoding import common_prefix_length
from ..kv_cache import KVCache


@dataclass
class _Entry:
    token_ids: np.ndarray  # the ids the cache holds, cache.length of them
    cache: KVCache
    nbytes: int


class PrefixCache:
    """LRU store of KV caches under a byte budget (0: keep nothing). Used by the engine thread; the
    counters may be read from any thread."""

    def __init__(self, budget_bytes: int, max_entries: int = 256):
        if budget_bytes < 0:
            raise ValueError(f"the prefix cache budget must be >= 0 bytes, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        # a lookup compares the prompt with every entry: bounded however small a model's entries are
        self.max_entries = max(1, int(max_entries))
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()  # oldest first
        self._next_key = 0
        self._lock = threading.Lock()
        self.nbytes = 0
        self.lookups = 0
        self.hits = 0  # lookups that reused at least one token
        self.cached_tokens = 0  # prompt tokens reused in all

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: np.ndarray, capacity: int) -> tuple[KVCache | None, int]:
        """A new cache holding the longest stored prefix of `prompt` that can be reused (at most
        len(prompt) - 1 tokens: the last prompt token is always computed, its logits pick the first new
        token) with room for `capacity` positions, and that prefix's length; (None, 0) on a miss."""
        self.lookups += 1
        limit = len(prompt) - 1
        candidates = []
        with self._lock:
            for key, entry in self._entries.items():
                n = min(common_prefix_length(entry.token_ids, prompt), limit)
                if n > 0:
                    candidates.append((n, key, entry))
        for n, key, entry in sorted(candidates, key=lambda c: -c[0]):
            cache = entry.cache.copy_prefix(n, capacity)
            if cache is not None:
                with self._lock:
                    if key in self._entries:
                        self._entries.move_to_end(key)
                self.hits += 1
                self.cached_tokens += n
                return cache, n
        return None, 0

    def store(self, token_ids: np.ndarray, cache: KVCache) -> None:
        """Keeps `cache` (holding token_ids[:cache.length]; the caller gives it up) for later lookups.
        Its bytes count as allocated, room it never used included: trimming would be a copy on the
        engine thread, a stall for every running stream."""
        length = cache.length
        if self.budget_bytes == 0 or length == 0:
            return
        ids = np.array(token_ids[:length], np.int64)
        nbytes = cache.nbytes
        if nbytes > self.budget_bytes:
            return
        with self._lock:
            for key, e in self._entries.items():  # already held by an entry that extends it: keep that one
                # (only without sliding layers: a ring gives back just its last positions, so a longer
                # entry may no longer hold what this one can give)
                if len(e.token_ids) >= length and common_prefix_length(e.token_ids, ids) == length \
                        and all(w is None for w in e.cache.windows):
                    self._entries.move_to_end(key)
                    return
            # an entry this one extends can give nothing this one cannot
            for key in [k for k, e in self._entries.items()
                        if len(e.token_ids) <= length and common_prefix_length(e.token_ids, ids) == len(e.token_ids)]:
                self.nbytes -= self._entries.pop(key).nbytes
            self._entries[self._next_key] = _Entry(ids, cache, nbytes)
            self._next_key += 1
            self.nbytes += nbytes
            while self.nbytes > self.budget_bytes or len(self._entries) > self.max_entries:
                self.nbytes -= self._entries.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0
