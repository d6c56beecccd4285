"""The EXAONE 4 forward pass, read top to bottom, driving the C++ ops in exaone_cpu._core.

Per decoder layer (transformers' modeling_exaone4.py, no pre-norm):
    q, k, v = q_proj(h), k_proj(h), v_proj(h)
    q, k    = q_norm(q), k_norm(k)                  RMSNorm per head, before RoPE
    q, k    = rope(q), rope(k)                      every layer if sliding_window is null,
                                                    otherwise only on sliding layers (global: NoPE)
    h       = h + post_attention_layernorm(o_proj(attention(q, k, v)))
    h       = h + post_feedforward_layernorm(down_proj(silu(gate_proj(h)) * up_proj(h)))
then the final norm and lm_head (tied to embed_tokens or not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import _core
from .checkpoint import CheckpointError, Tensor
from .config import Exaone4Config
from .quant import QuantLinear, WeightQuantizer, load_tensors, project, spec_from_options
from .generation import TokenStream
from .sampling import SamplingParams

DEFAULT_PREFILL_CHUNK = 256
KV_DTYPES = {"f32": np.float32, "f16": np.float16}


class Linear:
    """A weight matrix [out_features, in_features] in its stored format (memory-mapped)."""

    __slots__ = ("weight", "wtype")

    def __init__(self, tensor: Tensor):
        self.weight = tensor.data
        self.wtype = tensor.wtype

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _core.matmul(x, self.weight, self.wtype)


@dataclass
class DecoderLayer:
    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear
    q_norm: np.ndarray  # [head_dim]
    k_norm: np.ndarray  # [head_dim]
    gate_proj: Linear
    up_proj: Linear
    down_proj: Linear
    post_attention_layernorm: np.ndarray  # [hidden]
    post_feedforward_layernorm: np.ndarray  # [hidden]


class _WeightReader:
    """Takes tensors out of a checkpoint by name, checking shape and dtype."""

    def __init__(self, tensors: dict[str, Tensor], prefix: str, quant: WeightQuantizer | None = None):
        self.tensors = tensors
        self.prefix = prefix
        self.quant = quant  # quantized projections / head (exaone_cpu.quant), or None

    def tensor(self, name: str, shape: tuple[int, ...], *, prefixed: bool = True) -> Tensor:
        full = self.prefix + name if prefixed else name
        t = self.tensors.get(full)
        if t is None:
            raise CheckpointError(f"checkpoint is missing tensor {full!r}")
        if t.shape != shape:
            raise CheckpointError(f"tensor {full!r} has shape {list(t.shape)}, expected {list(shape)}")
        return t

    def linear(self, name: str, out_features: int, in_features: int, **kw) -> Linear | QuantLinear:
        if self.quant is not None:
            return self.quant.linear(self, name, out_features, in_features, **kw)
        t = self.tensor(name, (out_features, in_features), **kw)
        if t.wtype is None:
            raise CheckpointError(f"tensor {t.name!r} has dtype {t.dtype}; weights must be F32, BF16 or F16")
        return Linear(t)

    def norm(self, name: str, size: int) -> np.ndarray:
        return self.tensor(name, (size,)).to_f32()


class LayerCache:
    """K/V of one layer. Global layers keep every position (grown on demand); sliding layers keep a
    ring of window + chunk - 1 slots: enough that writing a prefill chunk never overwrites a key an
    earlier query of the same chunk still needs."""

    def __init__(self, kv_heads: int, head_dim: int, capacity: int, ring: bool, dtype=np.float32):
        self.ring = ring
        # [kv_heads, slots, head_dim]: each KV head's keys are contiguous for the attention kernel;
        # float32, or float16 (half the bytes attention reads; K/V rounded to nearest f16)
        self.k = np.zeros((kv_heads, capacity, head_dim), dtype)
        self.v = np.zeros((kv_heads, capacity, head_dim), dtype)
        self.pos = np.full(capacity, -1, np.int64)  # absolute position held by each slot

    def store(self, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        """Writes the K/V [T, kv_heads, head_dim] of consecutive positions (one forward step of one
        sequence)."""
        k, v = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
        if self.ring:
            slots = positions % len(self.pos)
            self.k[:, slots] = k
            self.v[:, slots] = v
            self.pos[slots] = positions
            return
        start, end = int(positions[0]), int(positions[-1]) + 1  # a slice: no fancy indexing per token
        if end > len(self.pos):
            self._grow(max(end, 2 * len(self.pos)))
        self.k[:, start:end] = k
        self.v[:, start:end] = v
        self.pos[start:end] = positions

    def _grow(self, capacity: int) -> None:
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], capacity, old.shape[2]), old.dtype)
            new[:, : old.shape[1]] = old
            setattr(self, name, new)
        pos = np.full(capacity, -1, np.int64)
        pos[: len(self.pos)] = self.pos
        self.pos = pos

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K, V [kv_heads, slots, head_dim] and the position of each slot (-1: empty), every slot
        of the buffer (the kernel skips empty ones; a slice would not be contiguous)."""
        return self.k, self.v, self.pos

    def truncate(self, length: int) -> None:
        """Forgets every position >= length (their slots become empty)."""
        self.pos[self.pos >= length] = -1


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

    @property
    def nbytes(self) -> int:
        return sum(c.k.nbytes + c.v.nbytes + c.pos.nbytes for c in self.layers)

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
        for layer, window in zip(self.layers, self.windows):
            if layer.ring and length > 0:
                needed = np.arange(max(0, length - window + 1), length)
                if not np.array_equal(layer.pos[needed % len(layer.pos)], needed):
                    return False
        for layer in self.layers:
            layer.truncate(length)  # also clears K/V an interrupted forward wrote past self.length
        self.length = length
        return True


class Model:
    """An EXAONE 4 causal language model on the CPU.

    Weights stay in the checkpoint's format (f32, bf16 or f16), memory-mapped; activations are f32.
    With `quant` (exaone_cpu.quant.WeightQuantizer) the projections and the embedding / lm_head are
    int8 / int4 (QuantLinear): quantized here, or memory-mapped from a quantized checkpoint.
    """

    def __init__(self, config: Exaone4Config, tensors: dict[str, Tensor], *, prefix: str = "model.",
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, quant: WeightQuantizer | None = None):
        self.config = config
        self.prefill_chunk = prefill_chunk
        self.kv_dtype = "f32"  # KV cache element type (load(kv_dtype=...))
        c = config
        hidden, d = c.hidden_size, c.head_dim
        r = _WeightReader(tensors, prefix, quant)
        if quant is not None:  # a QuantLinear (rows() looks tokens up) or a bf16 Tensor
            self.embed_tokens = quant.embedding(r, "embed_tokens.weight", (c.vocab_size, hidden))
        else:
            self.embed_tokens = r.tensor("embed_tokens.weight", (c.vocab_size, hidden))
            if self.embed_tokens.wtype is None:
                raise CheckpointError(f"embed_tokens.weight has dtype {self.embed_tokens.dtype}, expected a float type")
        self.layers = [
            DecoderLayer(
                q_proj=r.linear(f"layers.{i}.self_attn.q_proj.weight", c.num_attention_heads * d, hidden),
                k_proj=r.linear(f"layers.{i}.self_attn.k_proj.weight", c.num_key_value_heads * d, hidden),
                v_proj=r.linear(f"layers.{i}.self_attn.v_proj.weight", c.num_key_value_heads * d, hidden),
                o_proj=r.linear(f"layers.{i}.self_attn.o_proj.weight", hidden, c.num_attention_heads * d),
                q_norm=r.norm(f"layers.{i}.self_attn.q_norm.weight", d),
                k_norm=r.norm(f"layers.{i}.self_attn.k_norm.weight", d),
                gate_proj=r.linear(f"layers.{i}.mlp.gate_proj.weight", c.intermediate_size, hidden),
                up_proj=r.linear(f"layers.{i}.mlp.up_proj.weight", c.intermediate_size, hidden),
                down_proj=r.linear(f"layers.{i}.mlp.down_proj.weight", hidden, c.intermediate_size),
                post_attention_layernorm=r.norm(f"layers.{i}.post_attention_layernorm.weight", hidden),
                post_feedforward_layernorm=r.norm(f"layers.{i}.post_feedforward_layernorm.weight", hidden),
            )
            for i in range(c.num_hidden_layers)
        ]
        self.norm = r.norm("norm.weight", hidden)
        self.inv_freq = c.rope.inv_freq(d)  # [head_dim / 2]
        self.attention_scale = float(d) ** -0.5
        self.lm_head = self._output_head(r)

    def _output_head(self, r: _WeightReader):
        c = self.config
        if c.tie_word_embeddings:  # lm_head.weight, if stored, is ignored as transformers ties it
            return self.embed_tokens if isinstance(self.embed_tokens, QuantLinear) else Linear(self.embed_tokens)
        return r.linear("lm_head.weight", c.vocab_size, c.hidden_size, prefixed=False)

    # ---- the forward pass -------------------------------------------------------------------

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        if isinstance(self.embed_tokens, QuantLinear):
            return self.embed_tokens.rows(token_ids)  # [T, hidden] dequantized
        rows = self.embed_tokens.data[token_ids]  # [T, hidden] in the stored format
        if self.embed_tokens.dtype == "F32":
            return np.array(rows, dtype=np.float32)
        return _core.to_f32(rows, self.embed_tokens.wtype)

    def decoder_layer(self, i: int, layer: DecoderLayer, h: np.ndarray, positions: np.ndarray,
                      caches: Sequence[tuple[LayerCache, slice]]) -> None:
        """Runs layer i on h [T, hidden] in place. The rows may belong to several sequences: each
        (cache, rows) pair appends those rows' K/V to that sequence's cache and attends within it,
        while the matmuls run on all rows at once, so every weight is read once per step."""
        c = self.config
        T, H, KV, D = h.shape[0], c.num_attention_heads, c.num_key_value_heads, c.head_dim
        eps = c.rms_norm_eps

        q, k, v = project(h, layer.q_proj, layer.k_proj, layer.v_proj)
        q = q.reshape(T, H, D)  # [T, heads, head_dim]
        k = k.reshape(T, KV, D)  # [T, kv_heads, head_dim]
        v = v.reshape(T, KV, D)
        _core.rmsnorm(q, layer.q_norm, eps, out=q)
        _core.rmsnorm(k, layer.k_norm, eps, out=k)
        if c.uses_rope(i):
            _core.rope(q, positions, self.inv_freq)
            _core.rope(k, positions, self.inv_freq)
        attn = np.empty((T, H, D), np.float32)  # [T, heads, head_dim]
        for cache, rows in caches:
            cache.store(positions[rows], k[rows], v[rows])
            k_all, v_all, key_pos = cache.view()  # [kv_heads, slots, head_dim], [slots]
            _core.attention(q[rows], k_all, v_all, key_pos, positions[rows], c.window(i) or 0,
                            self.attention_scale, out=attn[rows])
        o = layer.o_proj(attn.reshape(T, H * D))  # [T, hidden]
        _core.rmsnorm_add(h, o, layer.post_attention_layernorm, eps)

        gate, up = project(h, layer.gate_proj, layer.up_proj)  # [T, intermediate] each
        down = layer.down_proj(_core.silu_mul(gate, up, out=gate))  # [T, hidden]
        _core.rmsnorm_add(h, down, layer.post_feedforward_layernorm, eps)

    def hidden_states(self, token_ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Final hidden states (after the final norm) [T, hidden] of token_ids appended to cache."""
        return self.hidden_states_batch([token_ids], [cache])

    def hidden_states_batch(self, token_ids: Sequence[np.ndarray], caches: Sequence[KVCache]) -> np.ndarray:
        """hidden_states of several sequences in one pass: rows [sum of lengths, hidden], in order."""
        lengths = [len(ids) for ids in token_ids]
        bounds = np.cumsum([0] + lengths)
        rows = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        h = self.embed(np.concatenate(token_ids))  # [T, hidden]
        positions = np.concatenate(
            [np.arange(cache.length, cache.length + n, dtype=np.int64) for cache, n in zip(caches, lengths)]
        )
        for i, layer in enumerate(self.layers):
            self.decoder_layer(i, layer, h, positions, [(cache.layers[i], r) for cache, r in zip(caches, rows)])
        for cache, n in zip(caches, lengths):
            cache.length += n
        return _core.rmsnorm(h, self.norm, self.config.rms_norm_eps, out=h)

    def forward_batch(self, token_ids: Sequence[Sequence[int] | np.ndarray], caches: Sequence[KVCache]) -> np.ndarray:
        """One step for several sequences together (batched decoding): token_ids[b] (at most
        prefill_chunk tokens, usually one) are appended to caches[b]. Returns the logits of each
        sequence's last position [batch, vocab]."""
        if len(token_ids) != len(caches) or not caches:
            raise ValueError(f"forward_batch needs one cache per sequence, got {len(token_ids)} and {len(caches)}")
        if len({id(c) for c in caches}) != len(caches):
            raise ValueError("forward_batch: the same cache appears twice")
        ids = [self.check_token_ids(t, start=c.length) for t, c in zip(token_ids, caches)]
        for b, t in enumerate(ids):
            if len(t) > self.prefill_chunk:
                raise ValueError(f"forward_batch: sequence {b} has {len(t)} tokens, more than prefill_chunk "
                                 f"({self.prefill_chunk}); prefill it with forward() first")
        h = self.hidden_states_batch(ids, caches)
        last_rows = np.cumsum([len(t) for t in ids]) - 1
        return self.lm_head(np.ascontiguousarray(h[last_rows]))

    def forward(self, token_ids: Sequence[int] | np.ndarray, cache: KVCache, *,
                all_logits: bool = False) -> np.ndarray:
        """Feeds token_ids after what cache holds; returns logits [T, vocab] (all_logits) or the
        last position's [vocab]. Long inputs are processed in chunks of prefill_chunk tokens."""
        ids = self.check_token_ids(token_ids, start=cache.length)
        outputs = []
        for start in range(0, len(ids), self.prefill_chunk):
            chunk = ids[start : start + self.prefill_chunk]
            h = self.hidden_states(chunk, cache)
            if all_logits:
                outputs.append(self.lm_head(h))
            elif start + self.prefill_chunk >= len(ids):
                outputs.append(self.lm_head(np.ascontiguousarray(h[-1:]))[0])
        return np.concatenate(outputs) if all_logits else outputs[0]

    # ---- public API ---------------------------------------------------------------------------

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache. capacity: positions to allocate up front (prompt + new tokens when
        known), so the cache does not grow (by doubling, a copy) in the middle of decoding."""
        initial = 256 if capacity is None else max(1, int(capacity))
        return KVCache(self.config, self.prefill_chunk, initial, KV_DTYPES[self.kv_dtype])

    def logits(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 logits [len(token_ids), vocab] for a fresh sequence."""
        return self.forward(token_ids, self.new_cache(), all_logits=True)

    def generate(self, token_ids: Sequence[int] | np.ndarray, max_new_tokens: int = 128, *,
                 eos_token_id: int | Iterable[int] | None = None, stop_at_eos: bool = True,
                 return_logits: bool = False, sampling: SamplingParams | None = None, **sampling_options):
        """Continuation of token_ids: a list of up to max_new_tokens new token ids, stopping after an
        eos id (the config's unless eos_token_id is given; never when stop_at_eos=False).
        With return_logits, also the raw logits [new_tokens, vocab] each token was chosen from.

        Greedy unless `sampling` (a SamplingParams) or its fields as keywords (temperature=, top_k=,
        top_p=, min_p=, repetition_penalty=, presence_penalty=, frequency_penalty=, seed=) say
        otherwise. For text, streaming and stop strings see exaone_cpu.generation.Generator.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        if sampling is not None and sampling_options:
            raise TypeError("pass either sampling=SamplingParams(...) or its fields as keywords, not both")
        sampling = sampling or SamplingParams(**sampling_options)
        prompt = self.check_token_ids(token_ids)
        if len(prompt) + max_new_tokens > self.config.max_position_embeddings:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                f"max_position_embeddings ({self.config.max_position_embeddings})"
            )
        if eos_token_id is None:
            eos = set(self.config.eos_token_ids)
        else:
            eos = {eos_token_id} if isinstance(eos_token_id, (int, np.integer)) else set(eos_token_id)
        stream = TokenStream(self, prompt, max_new_tokens=max_new_tokens, sampling=sampling,
                             stop_token_ids=eos if stop_at_eos else ())
        new_tokens: list[int] = []
        steps: list[np.ndarray] = []
        for token in stream:
            new_tokens.append(token)
            if return_logits:
                steps.append(stream.logits)
        if not return_logits:
            return new_tokens
        return new_tokens, (np.stack(steps) if steps else np.zeros((0, self.config.vocab_size), np.float32))

    def check_token_ids(self, token_ids, *, start: int = 0) -> np.ndarray:
        """token_ids as an int64 array, or ValueError naming what is wrong with them."""
        ids = np.asarray(token_ids)
        if ids.ndim != 1:
            raise ValueError(f"token_ids must be a 1-D sequence of ints, got shape {ids.shape}")
        if ids.size == 0:
            raise ValueError("token_ids is empty: at least one token is needed")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token_ids must be integers, got dtype {ids.dtype}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.config.vocab_size))
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"token id {int(ids[j])} at position {j} is out of range [0, {self.config.vocab_size})"
            )
        if start + ids.size > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {start + ids.size} tokens exceeds max_position_embeddings "
                f"({self.config.max_position_embeddings})"
            )
        return ids.astype(np.int64, copy=False)


def set_threads(threads: int | None) -> None:
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _core.set_num_threads(threads)


def load(path: str | Path, *, threads: int | None = None, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
         quant: str | None = None, group_size: int | None = None, asym: bool = False,
         head: str | None = None, kv_dtype: str = "f32") -> Model:
    """Loads a Hugging Face EXAONE 4 checkpoint directory (config.json + safetensors), or a
    quantized one written by exaone-quantize (detected from config.json's quantization_config).

    Returns a Model (Exaone4ForCausalLM) or, when config.json's `architectures` names a task head,
    an exaone_cpu.heads model (sequence/token classification, question answering).

    threads: threads for every op (default: the CPUs this process may use). The thread pool is
    shared by the whole process, so the last value set applies to every loaded model.
    prefill_chunk: tokens per forward step during prefill (bounds activation memory).
    quant: "int8" or "int4" quantizes a float checkpoint's projections as it loads (see
    exaone_cpu.quant and docs/quantization.md), with group_size (32, 64, 128; 0 = per-row, int8
    only; default 128 for int8, 64 for int4), asym (int4 scale + min) and head ("int8" default,
    "int4" or "bf16": the embedding / lm_head).
    kv_dtype: "f32" (default: exact) or "f16" (K/V rounded to f16: half the memory and the bytes
    attention reads, faster decoding at long context, as llama.cpp's default cache).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist" if not path.exists()
                                else f"{path} is not a directory")
    if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 1:
        raise ValueError(f"prefill_chunk must be a positive integer, got {prefill_chunk!r}")
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
    spec = spec_from_options(quant, group_size, asym, head)
    config = Exaone4Config.from_pretrained(path)
    set_threads(threads)
    tensors, quantizer = load_tensors(path, spec)
    model = model_class(config)(config, tensors, prefill_chunk=prefill_chunk, quant=quantizer)
    model.kv_dtype = kv_dtype
    return model


def model_class(config: Exaone4Config) -> type[Model]:
    """The class for the config's architecture: the causal LM or one of the task heads."""
    arch = config.architectures[0]
    if arch == "Exaone4ForCausalLM":
        return Model
    from .heads import TASK_MODELS  # heads build on Model

    return TASK_MODELS[arch]
