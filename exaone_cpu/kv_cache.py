"""The KV cache: per-layer keys and values of one sequence (a growing buffer for global layers, a
ring of the window for sliding ones), with truncation for prompt caching."""

from __future__ import annotations

import numpy as np

from .config import Exaone4Config

KV_DTYPES = {"f32": np.float32, "f16": np.float16, "int8": np.int8}


class LayerCache:
    """K/V of one layer. Global layers keep every position (grown on demand); sliding layers keep a
    ring of window + chunk - 1 slots: enough that writing a prefill chunk never overwrites a key an
    earlier query of the same chunk still needs."""

    def __init__(self, kv_heads: int, head_dim: int, capacity: int, ring: bool, dtype=np.float32):
        self.ring = ring
        # [kv_heads, slots, head_dim]: each KV head's keys are contiguous for the attention kernel;
        # float32, float16 (half the bytes attention reads; K/V rounded to nearest f16), or int8
        # with an f32 scale per head and position in k_scale / v_scale [kv_heads, slots]
        self.k = np.zeros((kv_heads, capacity, head_dim), dtype)
        self.v = np.zeros((kv_heads, capacity, head_dim), dtype)
        self.k_scale = self.v_scale = None
        if self.quantized:
            self.k_scale = np.zeros((kv_heads, capacity), np.float32)
            self.v_scale = np.zeros((kv_heads, capacity), np.float32)
        self.pos = np.full(capacity, -1, np.int64)  # absolute position held by each slot

    @property
    def quantized(self) -> bool:
        return self.k.dtype == np.int8

    def reserve(self, end: int) -> None:
        """Room for positions < end: a global layer's buffer grows (by doubling, so decoding copies
        it rarely); a ring has its fixed size."""
        if not self.ring and end > len(self.pos):
            self._grow(max(end, 2 * len(self.pos)))

    def slots(self, positions: np.ndarray) -> np.ndarray:
        """The slot each position's K/V is written to (by _core.attention_block): the position
        itself in a global layer (after reserve), its place in the ring in a sliding one."""
        return positions % len(self.pos) if self.ring else positions

    def _grow(self, capacity: int) -> None:
        for name in ("k", "v", "k_scale", "v_scale"):
            old = getattr(self, name)
            if old is None:
                continue
            new = np.zeros((old.shape[0], capacity) + old.shape[2:], old.dtype)
            new[:, : old.shape[1]] = old
            setattr(self, name, new)
        pos = np.full(capacity, -1, np.int64)
        pos[: len(self.pos)] = self.pos
        self.pos = pos

    def view(self) -> tuple:
        """K, V [kv_heads, slots, head_dim] and the position of each slot (-1: empty), every slot
        of the buffer (the kernel skips empty ones; a slice would not be contiguous); for an int8
        cache also the scales [kv_heads, slots]: what _core.attention / attention_block take."""
        if self.quantized:
            return self.k, self.v, self.pos, self.k_scale, self.v_scale
        return self.k, self.v, self.pos

    @property
    def nbytes(self) -> int:
        scales = 0 if self.k_scale is None else self.k_scale.nbytes + self.v_scale.nbytes
        return self.k.nbytes + self.v.nbytes + self.pos.nbytes + scales

    def truncate(self, length: int) -> None:
        """Forgets every position >= length (their slots become empty)."""
        self.pos[self.pos >= length] = -1

    def copy(self, length: int, capacity: int) -> LayerCache:
        """A new LayerCache holding this one's positions < length (a global layer's buffer sized for
        `capacity` positions; a ring copied whole)."""
        out = LayerCache.__new__(LayerCache)
        out.ring = self.ring
        names = ("k", "v") + (("k_scale", "v_scale") if self.quantized else ())
        out.k_scale = out.v_scale = None
        if self.ring:
            for name in names:
                setattr(out, name, getattr(self, name).copy())
            out.pos = self.pos.copy()
        else:
            slots = max(capacity, length, 1)
            for name in names:
                a = getattr(self, name)
                b = np.zeros((a.shape[0], slots) + a.shape[2:], a.dtype)
                b[:, :length] = a[:, :length]
                setattr(out, name, b)
            out.pos = np.full(slots, -1, np.int64)
            out.pos[:length] = self.pos[:length]
        out.truncate(length)
        return out


class KVCache:
    """The state of one sequence: per-layer K/V and the number of tokens already processed."""

    def __init__(self, config: Exaone4Config, prefill_chunk: int, initial_capacity: int = 256,
                 dtype=np.float32):
        self.length = 0
        self.layers = []
        self.windows = tuple(config.window(i) for i in range(config.num_hidden_layers))
        for i in range(config.num_hidden_layers):
            window = config.window(i)
            if window is not None:
                self.layers.append(
                    LayerCache(config.num_key_value_heads, config.head_dim, window + prefill_chunk - 1, True, dtype)
                )
            else:
                self.layers.append(
                    LayerCache(config.num_key_value_heads, config.head_dim, initial_capacity, False, dtype)
                )

    def reserve(self, end: int) -> None:
        """Room in every layer for positions < end (before a step writes them)."""
        for layer in self.layers:
            layer.reserve(end)

    def reusable(self, length: int) -> bool:
        """Whether the state after the first `length` tokens can be recovered (see truncate)."""
        if not 0 <= length <= self.length:
            return False
        for layer, window in zip(self.layers, self.windows):
            if layer.ring and length > 0:
                needed = np.arange(max(0, length - window + 1), length)
                if not np.array_equal(layer.pos[needed % len(layer.pos)], needed):
                    return False
        return True

    def copy_prefix(self, length: int, capacity: int = 0) -> KVCache | None:
        """A new cache in the state after the first `length` tokens of this one (which is left as it
        is), with room for `capacity` positions in its global layers; None when a sliding layer's ring
        no longer holds what position `length` attends to (see truncate)."""
        if not self.reusable(length):
            return None
        out = KVCache.__new__(KVCache)
        out.windows = self.windows
        out.layers = [layer.copy(length, capacity) for layer in self.layers]
        out.length = length
        return out

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.layers)

    def truncate(self, length: int) -> bool:
        """Goes back to the state after the first `length` tokens, so the next forward continues at
        position `length` (prompt caching: keep a shared prefix, recompute the rest).

        Returns False, changing nothing, when a sliding layer's ring no longer holds the keys position
        `length` attends to (positions length - window + 1 .. length - 1, overwritten by later ones:
        the ring allows going back about prefill_chunk positions); the caller must then start over.
        """
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length!r}")
        length = int(length)
        if not self.reusable(length):
            return False
        for layer in self.layers:
            layer.truncate(length)  # also clears K/V an interrupted forward wrote past self.length
        self.length = length
        return True
