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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import _core
from .checkpoint import CheckpointError, Tensor
from .config import Exaone4Config
from .constraints import OutputFormat, TokenConstraint, build_grammar, marker_token_ids
from .decoding import TokenStream
from .kv_cache import KV_DTYPES, KVCache, LayerCache
from .quant import QuantLinear, WeightQuantizer, project
from .sampling import SamplingParams
from .speculative import Speculative, speculative_config
from .weights import Linear, WeightReader

DEFAULT_PREFILL_CHUNK = 256


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
        self.speculative: Speculative | None = None  # speculative decoding by default (load(speculative=...))
        self.source: Path | None = None  # the directory or file it was loaded from (the draft tokenizer check)
        c = config
        hidden, d = c.hidden_size, c.head_dim
        r = WeightReader(tensors, prefix, quant)
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

    def _output_head(self, r: WeightReader):
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
                      caches: Sequence[LayerCache], starts: np.ndarray) -> None:
        """Runs layer i on h [T, hidden] in place. The rows may belong to several sequences: rows
        starts[b] .. starts[b + 1] append their K/V to sequence b's cache caches[b] and attend within
        it, while the matmuls run on all rows at once, so every weight is read once per step."""
        c = self.config
        T, H, KV, D = h.shape[0], c.num_attention_heads, c.num_key_value_heads, c.head_dim
        eps = c.rms_norm_eps

        q, k, v = project(h, layer.q_proj, layer.k_proj, layer.v_proj)
        if len(caches) == 1:
            slots = caches[0].slots(positions)  # [T] where each row's K/V goes
        else:
            slots = np.concatenate([cache.slots(positions[a:b]) for cache, a, b in zip(caches, starts, starts[1:])])
        # q_norm / k_norm, RoPE (unless a NoPE layer), K/V into the caches, attention: one C++ call
        attn = _core.attention_block(
            q.reshape(T, H, D), k.reshape(T, KV, D), v.reshape(T, KV, D),  # [T, heads | kv_heads, head_dim]
            layer.q_norm, layer.k_norm, eps, positions, self.inv_freq if c.uses_rope(i) else None,
            [cache.view() for cache in caches], starts, slots, c.window(i) or 0, self.attention_scale,
        )  # [T, heads, head_dim]
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
        starts = np.cumsum([0] + lengths, dtype=np.int64)  # [batch + 1] each sequence's first row
        h = self.embed(np.concatenate(token_ids))  # [T, hidden]
        positions = np.concatenate(
            [np.arange(cache.length, cache.length + n, dtype=np.int64) for cache, n in zip(caches, lengths)]
        )
        for cache, n in zip(caches, lengths):
            cache.reserve(cache.length + n)
        for i, layer in enumerate(self.layers):
            self.decoder_layer(i, layer, h, positions, [cache.layers[i] for cache in caches], starts)
        for cache, n in zip(caches, lengths):
            cache.length += n
        return _core.rmsnorm(h, self.norm, self.config.rms_norm_eps, out=h)

    def forward_batch(self, token_ids: Sequence[Sequence[int] | np.ndarray], caches: Sequence[KVCache], *,
                      logits_for: Sequence[int] | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """One step for several sequences together (batched decoding, chunked prefill): token_ids[b]
        (at most prefill_chunk tokens: one to decode, or a chunk of a prompt) are appended to
        caches[b]. Returns the logits of each sequence's last position [batch, vocab], or only of the
        sequences listed in logits_for (a prompt chunk that is not the last needs none); or, with
        rows (one count per sequence), of the last rows[b] positions of each sequence, in order
        [sum(rows), vocab] (a speculative round needs the last token's and every guess's)."""
        if len(token_ids) != len(caches) or not caches:
            raise ValueError(f"forward_batch needs one cache per sequence, got {len(token_ids)} and {len(caches)}")
        if len({id(c) for c in caches}) != len(caches):
            raise ValueError("forward_batch: the same cache appears twice")
        ids = [self.check_token_ids(t, start=c.length) for t, c in zip(token_ids, caches)]
        for b, t in enumerate(ids):
            if len(t) > self.prefill_chunk:
                raise ValueError(f"forward_batch: sequence {b} has {len(t)} tokens, more than prefill_chunk "
                                 f"({self.prefill_chunk}); prefill it with forward() first")
        ends = np.cumsum([len(t) for t in ids])
        if rows is not None:
            if logits_for is not None:
                raise ValueError("forward_batch: pass logits_for or rows, not both")
            counts = [int(r) for r in rows]
            if len(counts) != len(ids) or any(not 0 <= r <= len(t) for r, t in zip(counts, ids)):
                raise ValueError(f"forward_batch: rows {counts} must give 0..len(tokens) for each sequence")
            picked = np.concatenate([np.arange(e - r, e) for e, r in zip(ends, counts)]).astype(np.int64)
        else:
            wanted = range(len(ids)) if logits_for is None else [int(b) for b in logits_for]
            if any(not 0 <= b < len(ids) for b in wanted):
                raise ValueError(f"forward_batch: logits_for {list(wanted)} names a sequence outside the batch")
            picked = (ends - 1)[list(wanted)]
        h = self.hidden_states_batch(ids, caches)
        if not len(picked):
            return np.zeros((0, self.config.vocab_size), np.float32)
        return self.lm_head(np.ascontiguousarray(h[picked]))

    def forward(self, token_ids: Sequence[int] | np.ndarray, cache: KVCache, *,
                all_logits: bool = False, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Feeds token_ids after what cache holds; returns logits [T, vocab] (all_logits) or the
        last position's [vocab]. Long inputs are processed in chunks of prefill_chunk tokens;
        on_progress(done, total) is called after each chunk."""
        ids = self.check_token_ids(token_ids, start=cache.length)
        outputs = []
        for start in range(0, len(ids), self.prefill_chunk):
            chunk = ids[start : start + self.prefill_chunk]
            h = self.hidden_states(chunk, cache)
            if all_logits:
                outputs.append(self.lm_head(h))
            elif start + self.prefill_chunk >= len(ids):
                outputs.append(self.lm_head(np.ascontiguousarray(h[-1:]))[0])
            if on_progress is not None:
                on_progress(start + len(chunk), len(ids))
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
                 return_logits: bool = False, sampling: SamplingParams | None = None, tokenizer=None,
                 json_schema=None, regex: str | None = None, grammar: str | None = None,
                 choices: Sequence[str] | None = None, speculative=None, **sampling_options):
        """Continuation of token_ids: a list of up to max_new_tokens new token ids, stopping after an
        eos id (the config's unless eos_token_id is given; never when stop_at_eos=False).
        With return_logits, also the raw logits [new_tokens, vocab] each token was chosen from.

        Greedy unless `sampling` (a SamplingParams) or its fields as keywords (temperature=, top_k=,
        top_p=, min_p=, repetition_penalty=, presence_penalty=, frequency_penalty=, seed=) say
        otherwise. json_schema= (a dict, JSON text or pydantic model class), regex=, grammar=
        (llguidance's Lark syntax) or choices= constrain the new tokens' text (with tokenizer=, the
        model's exaone_cpu Tokenizer; see exaone_cpu.constraints); generation ends where it is complete.
        speculative= ("prompt-lookup", a draft Model or its path, a Speculative, "off"; None: this
        model's default) verifies guessed tokens several per forward (exaone_cpu.speculative): the
        same tokens, faster where the guesses are right.
        For text, streaming and stop strings see exaone_cpu.generation.Generator.
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
        stops = eos if stop_at_eos else ()
        fmt = OutputFormat.create(json_schema=json_schema, regex=regex, grammar=grammar, choices=choices)
        constraint = None
        if fmt is not None:
            if tokenizer is None:
                raise ValueError("json_schema / regex / grammar / choices need tokenizer= (the model's Tokenizer)")
            constraint = TokenConstraint(tokenizer, build_grammar(fmt, token_ids=marker_token_ids(tokenizer)),
                                         self.config.vocab_size, stops)
        spec = self.speculative if speculative is None else speculative_config(speculative, self)
        stream = TokenStream(self, prompt, max_new_tokens=max_new_tokens, sampling=sampling,
                             stop_token_ids=stops, constraint=constraint, speculative=spec)
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
