"""Running a GGUF file (llama.cpp's format, as LG publishes EXAONE 4.0) directly: its `exaone4`
metadata becomes the config, its vocabulary and merges the tokenizer, `tokenizer.chat_template` the
chat template, and its tensors the model's weights under their Hugging Face names.

Weights, by block type (the traits table in exaone_cpu.formats):
    F32, F16, BF16   used as stored (memory-mapped), like a safetensors checkpoint's
    Q8_0, Q4_0       -> Q8G / Q4G, group 32 (the same int8 values / nibbles and f16 scales)
    Q4_K             -> Q4KA (the same nibbles, 6-bit scales and mins, f16 d and dmin)
    Q5_K             -> Q8KA (the 5-bit codes one per byte, the same scales)
    Q6_K             -> Q6K, groups of 16 (the 6-bit codes kept, the int8 scales, f16 d)
    IQ4_XS           -> Q8K, groups of 32 (the table values as int8, the 6-bit scales - 32, f16 d)
Transcoding repacks the blocks into our kernels' row tiles once, at load; the values are the
file's, bit for bit (no re-quantization): dequantized, they equal gguf's reference.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from . import _core
from .checkpoint import Tensor
from .config import FULL, SLIDING, ConfigError, Exaone4Config
from .gguf_file import ARCH, GGUFError, GGUFFile, GGUFTensor
from .quant import QuantLinear, QuantSpec, WeightQuantizer
from .weights import Linear

# GGUF tensor name -> Hugging Face name ({i}: the layer)
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "post_ffw_norm": "post_feedforward_layernorm",
}
_LAYER = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")
_NOT_WEIGHTS = {"rope_freqs.weight"}  # read into the config

_FLOAT_DTYPES = {"F32": ("F32", "<f4"), "F16": ("F16", "<u2"), "BF16": ("BF16", "<u2")}


def hf_name(name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, or None for one EXAONE 4 does not have."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    m = _LAYER.match(name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"
    return None


# ---- config -----------------------------------------------------------------------------------


def config_from_gguf(f: GGUFFile) -> Exaone4Config:
    """The model's config from the `exaone4.*` metadata (as llama.cpp's converter writes it)."""

    def key(name: str, kind, default: Any = None, required: bool = True):
        return f.get(f"{ARCH}.{name}", kind, default, required=required and default is None)

    layers = key("block_count", int)
    heads = key("attention.head_count", int)
    kv_heads = key("attention.head_count_kv", int, heads)
    hidden = key("embedding_length", int)
    head_dim = key("attention.key_length", int, hidden // heads if heads else 0)
    if key("attention.value_length", int, head_dim) != head_dim:
        raise GGUFError(f"{f.path}: attention.value_length differs from attention.key_length; EXAONE 4 uses one head_dim")
    embd = f.tensors.get("token_embd.weight")
    if embd is None:
        raise GGUFError(f"{f.path}: tensor 'token_embd.weight' is missing")
    vocab = key("vocab_size", int, embd.shape[0])
    raw: dict[str, Any] = {
        "model_type": ARCH,
        "architectures": ["Exaone4ForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length", int),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": key("context_length", int),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon", float),
        "rope_theta": key("rope.freq_base", float, 10000.0),
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "bos_token_id": f.get("tokenizer.ggml.bos_token_id", int),
        "eos_token_id": f.get("tokenizer.ggml.eos_token_id", int),
        "pad_token_id": f.get("tokenizer.ggml.padding_token_id", int),
    }
    window = key("attention.sliding_window", int, required=False)
    raw["sliding_window"] = window
    pattern = f.get(f"{ARCH}.attention.sliding_window_pattern", (list, int, bool))
    if window is not None:
        if isinstance(pattern, list):
            if len(pattern) != layers or not all(isinstance(x, bool) for x in pattern):
                raise GGUFError(f"{f.path}: {ARCH}.attention.sliding_window_pattern must hold one true/false per layer")
            raw["layer_types"] = [SLIDING if x else FULL for x in pattern]
        elif isinstance(pattern, int) and not isinstance(pattern, bool):
            raw["sliding_window_pattern"] = pattern
        elif pattern is not None:
            raise GGUFError(f"{f.path}: {ARCH}.attention.sliding_window_pattern must be a list of booleans")
    scaling = f.get(f"{ARCH}.rope.scaling.type", str)
    if scaling not in (None, "none", "linear"):
        raise GGUFError(f"{f.path}: rope scaling {scaling!r} is not supported (none, linear, or rope_freqs)")
    if scaling == "linear":
        raw["rope_scaling"] = {"rope_type": "linear", "factor": key("rope.scaling.factor", float)}
    freqs = f.tensors.get("rope_freqs.weight")
    try:
        config = Exaone4Config.from_dict(raw)
        if freqs is not None:
            factors = freqs.dequantize().reshape(-1)
            if factors.shape != (config.head_dim // 2,) or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
                raise GGUFError(f"{f.path}: rope_freqs.weight must hold {config.head_dim // 2} positive factors")
            config = config.with_rope_freq_factors(tuple(float(x) for x in factors))
    except ConfigError as e:
        raise GGUFError(f"{f.path}: {e}") from None
    return config


# ---- weights ----------------------------------------------------------------------------------


def _float_tensor(name: str, t: GGUFTensor) -> Tensor:
    dtype, view = _FLOAT_DTYPES[t.type.name]
    return Tensor(name, dtype, t.data.view(view).reshape(t.shape))


_CHUNK_ROWS = 4096  # rows unpacked at a time (a multiple of the 8-row tiles): bounds the transient memory


def _transcode(t: GGUFTensor, n: int, k: int) -> QuantLinear:
    """The blocks of t as the kernel format formats.py names for its type, with the file's values
    (csrc/ops/gguf_repack.cpp, threaded; transcode_reference below is what it is tested against)."""
    try:
        qweight, scales, fmt, group = _core.repack_gguf(np.ascontiguousarray(t.data), t.type.id, k)
    except ValueError as e:
        raise GGUFError(f"tensor {t.name!r} ({t.type.name}): {e}") from None
    if (fmt.name, group) != t.type.kernel:
        raise RuntimeError(f"internal error: {t.type.name} repacked as {fmt.name} g{group}, not {t.type.kernel}")
    return QuantLinear(qweight, scales, None, fmt, group)


def transcode_reference(t: GGUFTensor, n: int, k: int) -> QuantLinear:
    """The numpy reference of _transcode, from the unpackers in exaone_cpu.formats: Q8_0 / Q4_0 ->
    Q8G / Q4G (the same codes and f16 scales), K types -> our K formats (the same codes,
    sub-scales and f16 super-block scales)."""
    kind, group = t.type.kernel
    fmt = getattr(_core.QuantFormat, kind)
    if t.type.unpack is None:
        blocks = t.data.reshape(n, k // 32, t.type.type_size)
        scales = np.ascontiguousarray(blocks[:, :, 0:2]).view("<u2").reshape(n, k // 32)
        qs = blocks[:, :, 2:]
        if fmt == _core.QuantFormat.Q8G:
            codes = np.ascontiguousarray(qs).view(np.int8).reshape(n, k)
        else:  # Q4_0 byte j: value j (low nibble) and value j + 16 (high nibble)
            codes = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, k)
        return QuantLinear.from_codes(codes, scales, None, fmt, group)
    parts = []
    for r0 in range(0, n, _CHUNK_ROWS):
        rows = min(_CHUNK_ROWS, n - r0)
        kb = t.type.unpack(t.data[r0:r0 + rows].reshape(-1, t.type.type_size))
        per_row = lambda a: None if a is None else a.reshape(rows, -1)  # noqa: E731
        parts.append(QuantLinear.from_kcodes(kb.codes.reshape(rows, k), per_row(kb.d), per_row(kb.c), fmt, group,
                                             per_row(kb.dmin), per_row(kb.mc)))
    if len(parts) == 1:
        return parts[0]
    return QuantLinear(np.concatenate([p.qweight for p in parts]), np.concatenate([p.scales for p in parts]),
                       None, fmt, group)


class GGUFWeights:
    """How the model's weight reader (weights.WeightReader) gets its projections and embedding
    from a GGUF file: float tensors as stored (or quantized at load with `quant`, like a
    safetensors checkpoint), Q8_0 / Q4_0 transcoded into our int8 / int4 kernels."""

    def __init__(self, f: GGUFFile, quant: QuantSpec | None):
        self.file = f
        self.blocks: dict[str, GGUFTensor] = {}  # HF name -> block-quantized 2-D tensor
        self.tensors: dict[str, Tensor] = {}  # HF name -> float tensor (and small dequantized ones)
        for name, t in f.tensors.items():
            if name in _NOT_WEIGHTS:
                continue
            hf = hf_name(name)
            if hf is None:
                raise GGUFError(f"{f.path}: tensor {name!r} is not part of an EXAONE 4 model")
            if t.type.name in _FLOAT_DTYPES:
                self.tensors[hf] = _float_tensor(hf, t)
            elif len(t.shape) == 1:  # a norm stored in blocks: small, dequantized once
                self.tensors[hf] = Tensor(hf, "F32", t.dequantize())
            else:
                self.blocks[hf] = t
        self.progress = None  # told each weight it repacks
        if quant is not None and self.blocks:
            kinds = sorted({t.type.name for t in self.blocks.values()})
            raise ValueError(f"{f.path} is already quantized ({', '.join(kinds)}); load it without quant=")
        self.quantizer = WeightQuantizer(quant, prequantized=False) if quant is not None else None

    def _block(self, full: str, n: int, k: int) -> QuantLinear:
        t = self.blocks[full]
        if t.shape != (n, k):
            raise GGUFError(f"{self.file.path}: tensor for {full!r} has shape {list(t.shape)}, expected {[n, k]}")
        if t.type.kernel is None:
            raise GGUFError(f"{self.file.path}: tensor for {full!r} is {t.type.name}, which has no kernel here")
        q = _transcode(t, n, k)
        self.file.release_pages(t)  # its blocks are repacked: the file's pages can go
        if self.progress is not None:
            self.progress(full)
        return q

    def conversions(self, config) -> int:
        """How many weights loading converts (for a progress bar)."""
        return self.quantizer.conversions(config) if self.quantizer is not None else len(self.blocks)

    def linear(self, reader, name: str, out_features: int, in_features: int, *, prefixed: bool = True):
        full = reader.prefix + name if prefixed else name
        if full in self.blocks:
            return self._block(full, out_features, in_features)
        if self.quantizer is not None:
            self.quantizer.progress = self.progress
            return self.quantizer.linear(reader, name, out_features, in_features, prefixed=prefixed)
        t = reader.tensor(name, (out_features, in_features), prefixed=prefixed)
        return Linear(t)

    def embedding(self, reader, name: str, shape: tuple[int, int]):
        full = reader.prefix + name
        if full in self.blocks:
            return self._block(full, *shape)
        if self.quantizer is not None:
            self.quantizer.progress = self.progress
            return self.quantizer.embedding(reader, name, shape)
        return reader.tensor(name, shape)
