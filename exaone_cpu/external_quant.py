"""Checkpoints quantized by other tools, loaded into our int4 / int8 kernels with their own codes,
scales and zero points (nothing re-quantized): AutoAWQ's GEMM packing, GPTQ (AutoGPTQ / GPTQModel,
symmetric or not, with or without act-order) and compressed-tensors' pack-quantized format (llm-
compressor), as config.json's `quantization_config` names them.

Packings (w[o, i] is the weight of output o, input i; g the group of input i):
    awq                qweight int32 [in, out/8]: nibble n of word [i, c] is output 8c + AWQ_ORDER[n];
                       qzeros int32 [in/G, out/8] alike; scales f16 [in/G, out];
                       w = s[g, o] * (q - z)
    gptq               qweight int32 [in/8, out]: nibble n of word [r, o] is input 8r + n; qzeros
                       int32 [groups, out/8]: nibble n of word [g, c] is output 8c + n, stored as z - 1
                       (checkpoint_format "gptq"; "gptq_v2" stores z); scales f16 [groups, out];
                       g_idx int32 [in] (act-order: not ascending); w = s[g_idx[i], o] * (q - z)
    compressed-tensors weight_packed int32 [out, in/8]: nibble n of word [o, c] is input 8c + n, as
                       q + 8 (4 bits) or q + 128 (8 bits, 4 per word); weight_scale [out, in/G];
                       weight_zero_point (asymmetric) int32 [out/8, in/G] packed along outputs;
                       w = s[o, g] * (q - z)
Into our formats (docs/quantization.md): zero points all 8 (4 bits) or absent -> Q4G (exact);
otherwise Q4GA with min = -s * z rounded to f16 (within 2^-11 of s * z: under 1 % of one step);
8-bit symmetric -> Q8G (exact). Act-order groups are made contiguous by sorting the input columns
(QuantLinear.perm gathers x to match), which is exact too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from .checkpoint import CheckpointError, Tensor
from .quant import QuantLinear
from .weights import Linear

METHODS = ("awq", "gptq", "compressed-tensors")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # output index (within 8) of nibble n in an AWQ word

_BODY_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ExternalQuant:
    """A parsed quantization_config of AWQ, GPTQ or compressed-tensors."""

    method: str
    bits: int
    group_size: int  # inputs per scale; 0: one per row
    symmetric: bool
    zeros_minus_one: bool = False  # GPTQ v1 stores z - 1

    @classmethod
    def from_config(cls, block: Any, where: str = "config.json") -> ExternalQuant:
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{where}: quantization_config: {what}")

        if not isinstance(block, dict):
            raise bad(f"must be a JSON object, got {block!r:.80}")
        method = block.get("quant_method")
        if method == "awq":
            version = str(block.get("version", "gemm")).lower()
            if version != "gemm":
                raise bad(f"AWQ version {version!r} is not supported (exaone_cpu reads AutoAWQ's 'gemm' packing)")
            bits, group = block.get("bits", block.get("w_bit")), block.get("group_size", block.get("q_group_size"))
            zero_point = block.get("zero_point", True)
            spec = cls("awq", bits, group, not zero_point)
        elif method == "gptq":
            fmt = block.get("checkpoint_format", "gptq")
            if fmt not in ("gptq", "gptq_v2"):
                raise bad(f"GPTQ checkpoint_format {fmt!r} is not supported (gptq, gptq_v2)")
            spec = cls("gptq", block.get("bits"), block.get("group_size"), bool(block.get("sym", True)),
                       zeros_minus_one=fmt == "gptq")
        elif method == "compressed-tensors":
            if block.get("format") != "pack-quantized":
                raise bad(f"compressed-tensors format {block.get('format')!r} is not supported (pack-quantized)")
            groups = block.get("config_groups")
            if not isinstance(groups, dict) or len(groups) != 1:
                raise bad("compressed-tensors needs exactly one entry in config_groups")
            (scheme,) = groups.values()
            w = (scheme or {}).get("weights") or {}
            if (scheme or {}).get("input_activations") is not None:
                raise bad("activation quantization (input_activations) is not supported: weights only")
            if w.get("type", "int") != "int":
                raise bad(f"weights of type {w.get('type')!r} are not supported (int)")
            strategy = w.get("strategy")
            if strategy not in ("group", "channel"):
                raise bad(f"weight strategy {strategy!r} is not supported (group, channel)")
            group = w.get("group_size") if strategy == "group" else 0
            spec = cls("compressed-tensors", w.get("num_bits"), group, bool(w.get("symmetric", True)))
        else:
            raise bad(f"quant_method {method!r} is not one of {', '.join(METHODS)}")
        if spec.bits not in (4, 8) or isinstance(spec.bits, bool):
            raise bad(f"{spec.bits!r}-bit weights are not supported (4, or 8 when symmetric)")
        if spec.bits == 8 and not spec.symmetric:
            raise bad("8-bit weights with zero points are not supported (symmetric 8-bit only)")
        g = spec.group_size
        if g == -1 and method == "gptq":
            spec = cls(spec.method, spec.bits, 0, spec.symmetric, spec.zeros_minus_one)
            g = 0
        if isinstance(g, bool) or not isinstance(g, int) or g not in (0, 32, 64, 128):
            raise bad(f"group_size {g!r} is not supported (32, 64, 128)")
        if g == 0 and spec.bits == 4:
            raise bad("4-bit weights with one scale per row are not supported (group_size 32, 64 or 128)")
        return spec

    @property
    def name(self) -> str:
        return f"{self.method} int{self.bits} g{self.group_size or 'row'}{'' if self.symmetric else ' asym'}"


def _nibbles(words: np.ndarray, bits: int) -> np.ndarray:
    """int32 words [..., W] -> their values [..., W, 32 / bits], value n = bits n*bits.. of the word."""
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    return ((words.astype(np.uint32)[..., None] >> shifts) & np.uint32((1 << bits) - 1)).astype(np.int16)


def _f16_bits(t: Tensor) -> np.ndarray:
    """A scale tensor as f16 bits: f16 as stored; bf16 / f32 rounded to f16 (exact for bf16 within
    f16's normal range), refusing scales f16 cannot hold (overflow, or a nonzero that would vanish)."""
    if t.dtype == "F16":
        bits = np.ascontiguousarray(t.data)
        if np.any((bits & 0x7C00) == 0x7C00):
            raise CheckpointError(f"{t.name}: scales that are inf or NaN")
        return bits
    f = t.to_f32()
    with np.errstate(over="ignore"):
        h = f.astype(np.float16)
    if not np.all(np.isfinite(h)) or np.any((h == 0) & (f != 0)):
        raise CheckpointError(f"{t.name}: {t.dtype} scales outside the f16 range our int4 kernels use")
    return h.view(np.uint16)


class ExternalWeights:
    """How the model's weight reader gets its projections from an AWQ / GPTQ / compressed-tensors
    checkpoint: quantized modules into our kernels, everything else (embedding, lm_head, norms) as
    stored."""

    def __init__(self, tensors: dict[str, Tensor], spec: ExternalQuant):
        self.tensors = tensors
        self.spec = spec
        self.progress = None  # told each weight it repacks

    def conversions(self, config) -> int:
        """How many weights loading converts (for a progress bar): the projections."""
        return 7 * config.num_hidden_layers

    def _get(self, name: str, dtype: str | tuple) -> Tensor:
        t = self.tensors.get(name)
        if t is None:
            raise CheckpointError(f"{self.spec.method} checkpoint is missing tensor {name!r}")
        kinds = dtype if isinstance(dtype, tuple) else (dtype,)
        if t.dtype not in kinds:
            raise CheckpointError(f"tensor {name!r} has dtype {t.dtype}, expected {' or '.join(kinds)}")
        return t

    def _check(self, name: str, t: Tensor, shape: tuple[int, ...]) -> None:
        if t.shape != shape:
            raise CheckpointError(f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)} "
                                  f"({self.spec.name})")

    def linear(self, reader, name: str, out_features: int, in_features: int, *, prefixed: bool = True):
        full = reader.prefix + name if prefixed else name
        base = full[: -len(".weight")]
        module = base.rsplit(".", 1)[-1]
        if module not in _BODY_SUFFIXES or full in self.tensors:  # left unquantized (lm_head, `ignore`)
            t = reader.tensor(name, (out_features, in_features), prefixed=prefixed)
            if t.wtype is None:
                raise CheckpointError(f"tensor {t.name!r} has dtype {t.dtype}; weights must be F32, BF16 or F16")
            return Linear(t)
        if in_features % 32:
            raise CheckpointError(f"{base}: in_features {in_features} is not a multiple of 32")
        codes, scales, zeros, perm = getattr(self, "_" + self.spec.method.replace("-", "_"))(base, out_features,
                                                                                          in_features)
        q = _to_kernel(codes, scales, zeros, perm, self.spec)
        if self.progress is not None:
            self.progress(base)
        return q

    def embedding(self, reader, name: str, shape: tuple[int, int]):
        return reader.tensor(name, shape)

    # Each reader returns (codes [out, in] unsigned, f16 scale bits [out, groups], integer zeros
    # [out, groups] or None, input permutation or None), with groups contiguous in the stored order.

    def _groups(self, k: int) -> int:
        return 1 if self.spec.group_size == 0 else k // self.spec.group_size

    def _awq(self, base: str, n: int, k: int):
        G = self._groups(k)
        qw = self._get(base + ".qweight", "I32")
        qz = self._get(base + ".qzeros", "I32")
        sc = self._get(base + ".scales", ("F16", "BF16", "F32"))
        self._check(qw.name, qw, (k, n // 8))
        self._check(qz.name, qz, (G, n // 8))
        self._check(sc.name, sc, (G, n))
        inverse = np.argsort(AWQ_ORDER)  # nibble holding output j of a word
        codes = _nibbles(qw.data, 4)[:, :, inverse].reshape(k, n).T
        zeros = _nibbles(qz.data, 4)[:, :, inverse].reshape(G, n).T
        return codes, _f16_bits(sc).T, None if self.spec.symmetric else zeros.astype(np.int32), None

    def _gptq(self, base: str, n: int, k: int):
        G = self._groups(k)
        qw = self._get(base + ".qweight", "I32")
        qz = self._get(base + ".qzeros", "I32")
        sc = self._get(base + ".scales", ("F16", "BF16", "F32"))
        per = 32 // self.spec.bits
        self._check(qw.name, qw, (k // per, n))
        self._check(sc.name, sc, (G, n))
        self._check(qz.name, qz, (G, -(-n * self.spec.bits // 32)))
        codes = _nibbles(qw.data, self.spec.bits).transpose(1, 0, 2).reshape(n, k)  # [out, in]
        zeros = _nibbles(qz.data, self.spec.bits).reshape(G, -1)[:, :n].T.astype(np.int32)  # [out, G]
        if self.spec.zeros_minus_one:
            zeros = zeros + 1
        perm = None
        g_idx_t = self.tensors.get(base + ".g_idx")
        if g_idx_t is not None:
            self._check(g_idx_t.name, g_idx_t, (k,))
            g_idx = np.asarray(g_idx_t.data, dtype=np.int64)
            if g_idx.min() < 0 or g_idx.max() >= G:
                raise CheckpointError(f"{g_idx_t.name}: group indices outside [0, {G})")
            if not np.array_equal(g_idx, np.arange(k) // (self.spec.group_size or k)):
                perm = np.argsort(g_idx, kind="stable")
                if not np.array_equal(np.bincount(g_idx, minlength=G), np.full(G, k // G)):
                    raise CheckpointError(f"{g_idx_t.name}: groups of unequal size cannot be made contiguous")
                codes = codes[:, perm]
        return codes, _f16_bits(sc).T, zeros, perm

    def _compressed_tensors(self, base: str, n: int, k: int):
        G = self._groups(k)
        bits = self.spec.bits
        per = 32 // bits
        wp = self._get(base + ".weight_packed", "I32")
        sc = self._get(base + ".weight_scale", ("F16", "BF16", "F32"))
        self._check(wp.name, wp, (n, -(-k // per)))
        self._check(sc.name, sc, (n, G))
        shape = self.tensors.get(base + ".weight_shape")
        if shape is not None and [int(v) for v in np.asarray(shape.data).reshape(-1)] != [n, k]:
            raise CheckpointError(f"{shape.name} says {np.asarray(shape.data).tolist()}, expected {[n, k]}")
        codes = _nibbles(wp.data, bits).reshape(n, -1)[:, :k]  # stored as q + 2^(bits-1)
        zeros = None
        if not self.spec.symmetric:
            zp = self._get(base + ".weight_zero_point", "I32")
            self._check(zp.name, zp, (-(-n // per), G))
            # packed along outputs: nibble m of word [c, g] is output 8c + m; stored as z + 8
            zeros = _nibbles(zp.data, bits).transpose(0, 2, 1).reshape(-1, G)[:n].astype(np.int32)
        return codes, _f16_bits(sc), zeros, None


def _to_kernel(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, perm, spec: ExternalQuant) -> QuantLinear:
    """Unsigned codes u (w = s * (u - z)), f16 scales [out, groups] and integer zeros z [out,
    groups] (None: symmetric, z = 2^(bits-1)) as a QuantLinear of ours."""
    group = spec.group_size
    half = 1 << (spec.bits - 1)
    if zeros is not None and np.all(zeros == half):
        zeros = None  # symmetric after all: w = s * (u - 2^(bits-1))
    if spec.bits == 8:
        if zeros is not None:
            raise CheckpointError(f"{spec.name}: 8-bit weights with zero points other than 128 are not supported")
        q = (codes.astype(np.int16) - 128).astype(np.int8)
        return QuantLinear.from_codes(q, scales, None, _core.QuantFormat.Q8G, group, perm=perm)
    if zeros is None:
        return QuantLinear.from_codes(codes, scales, None, _core.QuantFormat.Q4G, group, perm=perm)
    s = scales.view(np.float16).astype(np.float32)
    mins = (-s * zeros.astype(np.float32)).astype(np.float16)  # the one rounding: s * z to f16
    return QuantLinear.from_codes(codes, scales, mins.view(np.uint16), _core.QuantFormat.Q4GA, group, perm=perm)


def external_quantization(path) -> ExternalQuant | None:
    """The ExternalQuant of path/config.json's quantization_config when it names AWQ, GPTQ or
    compressed-tensors; None for any other checkpoint."""
    import json
    from pathlib import Path

    file = Path(path) / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # the config loader reports a missing or broken config.json
    block = raw.get("quantization_config") if isinstance(raw, dict) else None
    if not isinstance(block, dict) or block.get("quant_method") not in METHODS:
        return None
    return ExternalQuant.from_config(block, str(file))
