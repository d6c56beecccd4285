"""Quantized weights: int8 / int4 group-wise formats, quantization at load, quantized checkpoints.

Formats (layouts in docs/quantization.md and csrc/kernels/quant.h):
    int8          Q8G   qweight int8 [N, K]          + scales f16 [N, ceil(K/G)]
    int4          Q4G   qweight uint8 [N, K/2]       + scales            (w = s * (u - 8))
    int4 --asym   Q4GA  qweight uint8 [N, K/2]       + scales + mins f16 (w = s * u + m)
G is 32, 64 or 128 (or 0: one scale per row, int8 only). The decoder projections use the body
format; the embedding / lm_head use `head` (int8 by default, int4, or bf16).

A quantized checkpoint is an ordinary safetensors directory: each projection `X.weight` becomes
`X.qweight`, `X.scales` (and `X.mins`), every other tensor is copied, config.json gains a
`quantization_config` block and every safetensors file carries `format_version` in its metadata.
The arrays are stored exactly as the kernels read them, so loading is a memory map.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import _core
from .checkpoint import CheckpointError, Tensor, load_checkpoint_tensors
from .weights import Linear

QUANT_METHOD = "exaone_cpu"
FORMAT_VERSION = 2
GROUP_SIZES = (32, 64, 128)
HEAD_CHOICES = ("int8", "int4", "bf16")
DEFAULT_GROUP_SIZE = {8: 32, 4: 64}
DEFAULT_SHARD_BYTES = 400 * 1024 * 1024

# Decoder projections (body format); the embedding and lm_head use the head format; every other
# weight (norms, task heads such as `score`) stays as stored.
_BODY = re.compile(r"(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


def _role(name: str) -> str | None:
    if _BODY.search(name):
        return "body"
    if name == "lm_head.weight" or name.endswith("embed_tokens.weight"):
        return "head"
    return None


@dataclass(frozen=True)
class QuantSpec:
    """What to quantize to. bits 8 or 4; group_size 32/64/128 (0: per-row, int8 only; None: 32
    for int8, 64 for int4); asym: int4 with scale + min; head: format of the embedding / lm_head."""

    bits: int
    group_size: int | None = None
    asym: bool = False
    head: str = "int8"

    def __post_init__(self):
        if isinstance(self.bits, bool) or self.bits not in (8, 4):
            raise ValueError(f"bits must be 8 or 4, got {self.bits!r}")
        if self.group_size is None:
            object.__setattr__(self, "group_size", DEFAULT_GROUP_SIZE[self.bits])
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, int) or not (g in GROUP_SIZES or (g == 0 and self.bits == 8)):
            raise ValueError(
                f"unsupported group_size {g!r}: use 32, 64 or 128"
                + (" (or 0 for one scale per row)" if self.bits == 8 else " (per-row scales are int8 only)")
            )
        if not isinstance(self.asym, bool):
            raise ValueError(f"asym must be True or False, got {self.asym!r}")
        if self.asym and self.bits != 4:
            raise ValueError("asym (scale + min) is an int4 option; int8 is symmetric")
        if self.head not in HEAD_CHOICES:
            raise ValueError(f"head must be one of {', '.join(HEAD_CHOICES)}, got {self.head!r}")
        if self.head == "int4" and g == 0:
            raise ValueError("an int4 head needs a group size (32, 64 or 128), not per-row scales")

    @property
    def name(self) -> str:
        g = "row" if self.group_size == 0 else f"g{self.group_size}"
        return f"int{self.bits}{'-asym' if self.asym else ''}-{g}-head-{self.head}"

    def format_for(self, role: str):
        """The _core.QuantFormat of a body / head weight, or None for a bf16 head."""
        if role == "head":
            if self.head == "bf16":
                return None
            bits = 8 if self.head == "int8" else 4
        else:
            bits = self.bits
        if bits == 8:
            return _core.QuantFormat.Q8G
        return _core.QuantFormat.Q4GA if self.asym else _core.QuantFormat.Q4G

    def to_config(self) -> dict:
        return {
            "quant_method": QUANT_METHOD,
            "format_version": FORMAT_VERSION,
            "bits": self.bits,
            "group_size": self.group_size,
            "asym": self.asym,
            "head": self.head,
            "scale_dtype": "float16",
        }

    @classmethod
    def from_config(cls, block, where: str = "config.json") -> "QuantSpec":
        """Parses and validates a quantization_config block written by exaone-quantize."""
        if not isinstance(block, dict):
            raise CheckpointError(f"{where}: quantization_config must be a JSON object, got {block!r}")
        method = block.get("quant_method")
        if method != QUANT_METHOD:
            raise CheckpointError(
                f"{where}: quantization_config.quant_method {method!r} is not supported "
                f"(exaone_cpu reads checkpoints made by exaone-quantize, quant_method {QUANT_METHOD!r})"
            )
        version = block.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: quantized format_version {version!r} is not supported (this exaone_cpu reads "
                f"version {FORMAT_VERSION}); re-quantize the model with this version's exaone-quantize"
            )
        try:
            return cls(bits=block.get("bits"), group_size=block.get("group_size"), asym=block.get("asym", False),
                       head=block.get("head", "int8"))
        except ValueError as e:
            raise CheckpointError(f"{where}: bad quantization_config: {e}") from None


class DestinationExistsError(FileExistsError, ValueError):
    """exaone-quantize's destination exists and --force was not given."""


class QuantLinear:
    """A quantized weight [out_features, in_features]. Called like weights.Linear (x f32 [T, K] ->
    y [T, N], activations quantized to int8 per 32 values on the fly); rows() dequantizes rows for
    an embedding lookup."""

    __slots__ = ("qweight", "scales", "mins", "format", "group_size", "perm")

    def __init__(self, qweight: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, format, group_size: int,
                 perm: np.ndarray | None = None):
        self.qweight = qweight
        self.scales = scales
        self.mins = mins
        self.format = format
        self.group_size = group_size
        # Input order of the stored columns (GPTQ act-order): column j multiplies x[:, perm[j]].
        self.perm = perm

    @classmethod
    def quantize(cls, data: np.ndarray, wtype, format, group_size: int) -> "QuantLinear":
        """Quantizes a float weight [N, K] (f32, or bf16/f16 bits as uint16 with its wtype)."""
        qweight, scales, mins = _core.quantize(np.ascontiguousarray(data), wtype, format, group_size)
        return cls(qweight, scales, mins, format, group_size)

    @classmethod
    def from_codes(cls, codes: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, format,
                   group_size: int, *, perm: np.ndarray | None = None) -> "QuantLinear":
        """A QuantLinear from row-major integer codes [N, K] (int8 q for Q8G, nibbles u in 0..15 for
        Q4G / Q4GA) and f16 scale (and min) bits [N, groups], packed into the row tiles of
        csrc/kernels/quant.h: how a checkpoint quantized elsewhere (GGUF, AWQ, GPTQ) takes our
        kernels' layout with its own values."""
        n, k = codes.shape
        if k % 32:
            raise ValueError(f"in_features {k} is not a multiple of 32")
        groups = 1 if group_size == 0 else -(-k // group_size)
        if perm is not None and sorted(perm.tolist()) != list(range(k)):
            raise ValueError("perm must be a permutation of the input columns")
        for name, a in (("scales", scales), ("mins", mins)):
            if a is not None and a.shape != (n, groups):
                raise ValueError(f"{name} has shape {list(a.shape)}, expected {[n, groups]}")
        if (mins is not None) != (format == _core.QuantFormat.Q4GA):
            raise ValueError(f"{format.name} {'needs' if mins is None else 'takes no'} mins")
        tile = lambda a: None if a is None else _tile_rows(np.ascontiguousarray(a, dtype=np.uint16), 1)  # noqa: E731
        return cls(_pack_codes(codes, format), tile(scales), tile(mins), format, group_size,
                   None if perm is None else np.ascontiguousarray(perm, dtype=np.int64))

    @classmethod
    def from_kcodes(cls, codes: np.ndarray, d: np.ndarray, c: np.ndarray, format, group_size: int,
                    dmin: np.ndarray | None = None, mc: np.ndarray | None = None) -> "QuantLinear":
        """A K-format QuantLinear (csrc/kernels/quant.h) from row-major codes [N, K], f16 bits of d
        (and dmin) [N, K / 256] and 8-bit sub-scales c (and min codes mc) [N, K / group_size]: GGUF
        K-quant blocks with their own values."""
        n, k = codes.shape
        if k % 256:
            raise ValueError(f"in_features {k} is not a multiple of 256")
        if (dmin is None) != (mc is None) or (dmin is not None) != format.has_min:
            raise ValueError(f"{format.name} {'needs' if format.has_min else 'takes no'} dmin and mc")
        sections = [a for a in (d, dmin) if a is not None]
        sections = [_tile_rows(np.ascontiguousarray(a, dtype=np.uint16), 1).view(np.uint8) for a in sections]
        sections += [_tile_rows(np.ascontiguousarray(a).view(np.uint8), 1) for a in (c, mc) if a is not None]
        full = n & ~7
        parts = []
        for rows, tiles in ((slice(0, full), full // 8), (slice(full, n), 1 if n > full else 0)):
            if tiles:
                joined = np.concatenate([x[rows].reshape(tiles, -1) for x in sections], axis=1)
                parts.append(joined.reshape(rows.stop - rows.start, -1))
        return cls(_pack_codes(codes, format), np.concatenate(parts), None, format, group_size)

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]

    @property
    def in_features(self) -> int:
        return self.qweight.shape[1] * 8 // self.format.code_bits

    @property
    def nbytes(self) -> int:
        return self.qweight.nbytes + self.scales.nbytes + (0 if self.mins is None else self.mins.nbytes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.perm is not None:
            x = np.ascontiguousarray(x[:, self.perm])
        return _core.quant_matmul(x, self.qweight, self.scales, self.mins, self.format, self.group_size)

    @property
    def arrays(self) -> tuple:
        """(qweight, scales, mins, format, group_size): what _core.quant_matmul_multi takes."""
        return self.qweight, self.scales, self.mins, self.format, self.group_size

    def rows(self, ids) -> np.ndarray:
        """float32 [len(ids), in_features]: the dequantized rows ids (the embedding lookup), in the
        input order of x."""
        w = _core.dequant_rows(self.qweight, self.scales, self.mins, self.format, self.group_size,
                               np.ascontiguousarray(ids, dtype=np.int64))
        if self.perm is None:
            return w
        out = np.empty_like(w)
        out[:, self.perm] = w
        return out

    def dequantize(self) -> np.ndarray:
        return self.rows(np.arange(self.out_features))

    def __repr__(self) -> str:
        return (f"QuantLinear({self.format.name}, [{self.out_features}, {self.in_features}], "
                f"group_size={self.group_size})")


def _pack_codes(codes: np.ndarray, format) -> np.ndarray:
    """Row-major codes [N, K] as the format's qweight: 8-bit codes, or nibbles paired (k, k + 4)
    within each run of 8, or (6-bit codes, as u - 32) per block of 32 the low 4 bits as nibbles then
    2 runs of 4 bytes holding the high 2 bits (csrc/kernels/quant.h), in the row tiles."""
    n, k = codes.shape
    if format.code_bits == 8:
        return _tile_rows(np.ascontiguousarray(codes, dtype=np.int8 if format.code_signed else np.uint8), 4)
    if format.code_bits == 6:
        u = (np.asarray(codes, dtype=np.int16) + 32).astype(np.uint8).reshape(n, k // 32, 4, 2, 4)  # [block, o, s, i]
        nibbles = ((u[:, :, :, 0, :] & 15) | ((u[:, :, :, 1, :] & 15) << 4)).reshape(n, k // 32, 16)
        high = sum(((u[:, :, o, :, :] >> 4) & 3) << (2 * o) for o in range(4)).astype(np.uint8).reshape(n, k // 32, 8)
        return _tile_rows(np.concatenate([nibbles, high], axis=2).reshape(n, 3 * k // 4), 4)
    u = np.asarray(codes, dtype=np.uint8).reshape(n, k // 8, 2, 4)  # 8-k runs: k 0-3, k 4-7
    return _tile_rows((u[:, :, 0, :] | (u[:, :, 1, :] << 4)).reshape(n, k // 2), 4)


def _tile_rows(a: np.ndarray, unit: int) -> np.ndarray:
    """a [N, M] in the row tiles of csrc/kernels/quant.h: every 8 rows (the last N % 8 = W rows)
    stored as [M / unit][W][unit], so one load holds `unit` consecutive elements of each row."""
    n, m = a.shape
    out = _core.weight_empty((n, m), a.dtype)  # C order whatever a's layout; huge pages: decode streams it
    full = n & ~7
    if full:
        out[:full] = a[:full].reshape(full // 8, 8, m // unit, unit).transpose(0, 2, 1, 3).reshape(full, m)
    if n > full:
        w = n - full
        out[full:] = a[full:].reshape(w, m // unit, unit).transpose(1, 0, 2).reshape(w, m)
    return out


def project(x: np.ndarray, *linears) -> list[np.ndarray]:
    """[linear(x) for each linear]; when all are quantized, x is quantized once and their rows
    run as one thread-pool job (q/k/v, gate/up)."""
    if all(isinstance(lin, QuantLinear) and lin.perm is None for lin in linears):
        return _core.quant_matmul_multi(x, [lin.arrays for lin in linears])
    return [lin(x) for lin in linears]


def _bf16_of(t: Tensor) -> Tensor:
    """t as a bf16 Tensor (round to nearest even); bf16 input is returned as is."""
    if t.dtype == "BF16":
        return t
    f = t.to_f32() if t.dtype != "F32" else np.ascontiguousarray(t.data)
    bits = f.view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return Tensor(t.name, "BF16", rounded)


def _parts(base: str, format) -> dict[str, tuple[str, int]]:
    """Stored arrays of one quantized weight: name -> (safetensors dtype, dims of the shape known
    from (N, K, groups))."""
    parts = {f"{base}.qweight": ("I8" if format == _core.QuantFormat.Q8G else "U8", 0),
             f"{base}.scales": ("F16", 1)}
    if format == _core.QuantFormat.Q4GA:
        parts[f"{base}.mins"] = ("F16", 1)
    return parts


def _shapes(format, n: int, k: int, group_size: int) -> dict[str, tuple[int, int]]:
    groups = 1 if group_size == 0 else -(-k // group_size)
    return {"qweight": (n, k if format == _core.QuantFormat.Q8G else k // 2), "scales": (n, groups), "mins": (n, groups)}


class WeightQuantizer:
    """How the model's weight reader gets its projections and embedding under a QuantSpec: by
    quantizing float weights as they load (prequantized=False) or by taking the stored arrays of a
    quantized checkpoint (prequantized=True), checked against the shapes the config implies."""

    def __init__(self, spec: QuantSpec, *, prequantized: bool):
        self.spec = spec
        self.prequantized = prequantized
        self.progress: Callable[[str], None] | None = None  # told each weight it converts

    def conversions(self, config) -> int:
        """How many weights loading converts (for a progress bar): none from a quantized checkpoint,
        else the projections, the embedding and an untied lm_head."""
        if self.prequantized:
            return 0
        return 7 * config.num_hidden_layers + (1 if config.tie_word_embeddings else 2)

    def linear(self, reader, name: str, out_features: int, in_features: int, *, prefixed: bool = True):
        """A QuantLinear, or a weights.Linear for weights this spec keeps in a float format."""

        full = reader.prefix + name if prefixed else name
        role = _role(full)
        format = self.spec.format_for(role) if role else None
        if role is not None and format is not None:
            if self.prequantized:
                return self._stored(reader.tensors, full, format, out_features, in_features)
            t = reader.tensor(name, (out_features, in_features), prefixed=prefixed)
            return self._quantize(t, format)
        t = reader.tensor(name, (out_features, in_features), prefixed=prefixed)
        if t.wtype is None:
            raise CheckpointError(f"tensor {t.name!r} has dtype {t.dtype}; weights must be F32, BF16 or F16")
        if role == "head" and not self.prequantized:
            t = _bf16_of(t)  # head "bf16"
        return Linear(t)

    def embedding(self, reader, name: str, shape: tuple[int, int]):
        """The embedding table: a QuantLinear (looked up with rows()) or a float Tensor."""
        full = reader.prefix + name
        format = self.spec.format_for("head")
        if format is not None and self.prequantized:
            return self._stored(reader.tensors, full, format, *shape)
        t = reader.tensor(name, shape)
        if t.wtype is None:
            raise CheckpointError(f"{full} has dtype {t.dtype}, expected a float type")
        if format is None:
            return t if self.prequantized else _bf16_of(t)
        return self._quantize(t, format)

    def _quantize(self, t: Tensor, format) -> QuantLinear:
        if t.wtype is None:
            raise CheckpointError(f"tensor {t.name!r} has dtype {t.dtype}; weights must be F32, BF16 or F16")
        k = t.shape[1]
        if k % 32:
            raise CheckpointError(f"tensor {t.name!r} has {k} columns, not a multiple of 32: it cannot be quantized")
        q = QuantLinear.quantize(t.data, t.wtype, format, self.spec.group_size)
        if self.progress is not None:
            self.progress(t.name)
        return q

    def _stored(self, tensors: dict[str, Tensor], full: str, format, n: int, k: int) -> QuantLinear:
        base = full[: -len(".weight")]
        if k % 32:
            raise CheckpointError(f"{base}: in_features {k} is not a multiple of 32")
        group = self.spec.group_size
        want = _shapes(format, n, k, group)
        arrays = {}
        for part, (dtype, _) in _parts(base, format).items():
            t = tensors.get(part)
            if t is None:
                if full in tensors:
                    raise CheckpointError(f"quantized checkpoint holds {full!r} unquantized; expected {part!r} "
                                          f"({self.spec.name})")
                raise CheckpointError(f"quantized checkpoint is missing tensor {part!r}")
            key = part.rsplit(".", 1)[1]
            if t.dtype != dtype:
                raise CheckpointError(f"tensor {part!r} has dtype {t.dtype}, expected {dtype} for {format.name}")
            if t.shape != want[key]:
                raise CheckpointError(
                    f"tensor {part!r} has shape {list(t.shape)}, expected {list(want[key])} for a "
                    f"[{n}, {k}] weight in {format.name} with group_size {group}"
                )
            arrays[key] = t.data
        if format != _core.QuantFormat.Q4GA and f"{base}.mins" in tensors:
            raise CheckpointError(f"tensor {base}.mins is present but {base} is {format.name} (no mins) "
                                  f"according to quantization_config ({self.spec.name})")
        return QuantLinear(arrays["qweight"], arrays["scales"], arrays.get("mins"), format, group)


# ---- reading quantized checkpoints ------------------------------------------------------------


def checkpoint_quantization(path: str | Path) -> QuantSpec | None:
    """The QuantSpec in path/config.json's quantization_config, or None for a float checkpoint."""
    file = Path(path) / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # Exaone4Config.from_pretrained reports a missing or broken config.json
    if not isinstance(raw, dict) or raw.get("quantization_config") is None:
        return None
    return QuantSpec.from_config(raw["quantization_config"], str(file))


def _check_metadata(file: Path, metadata: dict[str, str]) -> None:
    version = metadata.get("format_version")
    if version is None:
        raise CheckpointError(f"{file}: no format_version in the safetensors metadata; this is not a "
                              "checkpoint written by exaone-quantize")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{file}: quantized format_version {version!r} is not supported (this "
                              f"exaone_cpu reads version {FORMAT_VERSION})")


def load_quantized_tensors(path: str | Path, mmap: bool = True) -> dict[str, Tensor]:
    """The tensors of a quantized checkpoint (memory-mapped unless mmap=False), each file's
    format_version checked."""
    return load_checkpoint_tensors(path, check_metadata=_check_metadata, mmap=mmap)


def load_tensors(path: str | Path, quant: QuantSpec | None,
                 mmap: bool = True) -> tuple[dict[str, Tensor], WeightQuantizer | None]:
    """Tensors and weight quantizer for model.load: a quantized checkpoint, or a float one that
    is quantized to `quant` as it loads (None: kept as stored)."""
    stored = checkpoint_quantization(path)
    if stored is not None:
        if quant is not None:
            raise ValueError(f"{path} is already quantized ({stored.name}); load it without quant=")
        return load_quantized_tensors(path, mmap), WeightQuantizer(stored, prequantized=True)
    tensors = load_checkpoint_tensors(path, mmap=mmap)
    return tensors, None if quant is None else WeightQuantizer(quant, prequantized=False)


def spec_from_options(quant, group_size=None, asym=False, head=None) -> QuantSpec | None:
    """The QuantSpec for load(quant="int8" | "int4", group_size=, asym=, head=), or None."""
    if quant is None:
        if group_size is not None or asym or head is not None:
            raise ValueError("group_size, asym and head need quant='int8' or 'int4'")
        return None
    if isinstance(quant, QuantSpec):
        return quant
    bits = {"int8": 8, "int4": 4}.get(quant)
    if bits is None:
        raise ValueError(f"quant must be 'int8', 'int4' or None, got {quant!r}")
    return QuantSpec(bits, group_size, asym, head or "int8")


# ---- writing quantized checkpoints ------------------------------------------------------------

_NP_DTYPES = {"F32": np.float32, "F16": np.uint16, "BF16": np.uint16, "I8": np.int8, "U8": np.uint8,
              "F64": np.float64, "I64": np.int64, "I32": np.int32, "I16": np.int16, "BOOL": np.bool_}

# Files copied from the source directory besides the weights and config.json.
_COPY_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt",
                  "chat_template*", "*.jinja", "generation_config.json", "LICENSE*", "NOTICE*", "README*")


@dataclass
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    source: str  # source tensor name
    nbytes: int = 0

    def __post_init__(self):
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * np.dtype(_NP_DTYPES[self.dtype]).itemsize


def _plan(tensors: dict[str, Tensor], spec: QuantSpec, tied: bool) -> list[tuple[str, list[_Entry]]]:
    """Per source tensor (checkpoint order by name), the tensors written for it."""
    plan = []
    for name in sorted(tensors):
        t = tensors[name]
        if name == "lm_head.weight" and tied:
            continue  # ignored by transformers and by exaone_cpu when embeddings are tied
        role = _role(name)
        format = spec.format_for(role) if role else None
        if role is not None and (t.wtype is None or t.data.ndim != 2):
            raise CheckpointError(f"tensor {name!r} has dtype {t.dtype} and shape {list(t.shape)}; "
                                  "expected a 2-D float weight")
        if format is not None:
            n, k = t.shape
            if k % 32:
                raise CheckpointError(f"tensor {name!r} has {k} columns, not a multiple of 32: it cannot be quantized")
            base = name[: -len(".weight")]
            shapes = _shapes(format, n, k, spec.group_size)
            entries = [_Entry(part, dtype, shapes[part.rsplit(".", 1)[1]], name)
                       for part, (dtype, _) in _parts(base, format).items()]
        elif role == "head":
            entries = [_Entry(name, "BF16", t.shape, name)]
        else:
            entries = [_Entry(name, t.dtype, t.shape, name)]
        plan.append((name, entries))
    return plan


def _shards(plan, shard_bytes: int) -> list[list[tuple[str, list[_Entry]]]]:
    shards, current, size = [], [], 0
    for item in plan:
        b = sum(e.nbytes for e in item[1])
        if current and size + b > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(item)
        size += b
    if current or not shards:
        shards.append(current)
    return shards


def _write_shard(file: Path, items, metadata: dict[str, str], produce: Callable[[str, Tensor], dict],
                 tensors: dict[str, Tensor], report: Callable[[str, list[_Entry], float], None]) -> None:
    """Writes one safetensors file tensor by tensor: the header is laid out from the plan, then each
    source tensor is converted and its outputs written before the next is read."""
    # 8-byte types first, then 4-byte, then the rest in plan order: every tensor starts aligned to
    # its element size (a quantized weight's f16 scales/mins and byte qweight stay together).
    def align_rank(item):
        size = max(np.dtype(_NP_DTYPES[e.dtype]).itemsize for e in item[1])
        return -size if size >= 4 else 0

    items = sorted(items, key=align_rank)
    header: dict = {"__metadata__": metadata}
    offset = 0
    for _, entries in items:
        for e in entries:
            header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
            offset += e.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-(8 + len(blob)) % 8)
    with open(file, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for source, entries in items:
            start = time.perf_counter()
            arrays = produce(source, tensors[source])
            for e in entries:
                a = arrays[e.name]
                if a.dtype != np.dtype(_NP_DTYPES[e.dtype]) or tuple(a.shape) != tuple(e.shape):
                    raise RuntimeError(f"internal error: {e.name} came out {a.dtype} {a.shape}, planned {e.dtype} {e.shape}")
                f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
            del arrays
            tensors[source].release()  # peak memory: one source tensor, not all read so far
            report(source, entries, time.perf_counter() - start)
        f.flush()
        os.fsync(f.fileno())


_OWNER_FILE = ".exaone-quantize.pid"  # in a temporary output directory: the process writing it


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or no way to tell: leave its directory alone
    return True


def _remove_stale_temporaries(dst: Path, log: Callable[[str], None]) -> None:
    """Removes DST.tmp-* directories left by a quantize run that was killed (its process is gone)."""
    for tmp in dst.parent.glob(glob.escape(dst.name) + ".tmp-*"):
        owner = tmp / _OWNER_FILE
        try:
            pid = int(owner.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created: leave it
        if not _process_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            log(f"removed {tmp}, left by an interrupted run (process {pid})")


def quantize_checkpoint(src: str | Path, dst: str | Path, spec: QuantSpec, *, force: bool = False,
                        shard_bytes: int = DEFAULT_SHARD_BYTES, log: Callable[[str], None] | None = print,
                        progress: bool | None = None) -> Path:
    """Writes a quantized copy of the Hugging Face checkpoint src to the directory dst.

    Works tensor by tensor (peak memory about one tensor plus its quantized form), in shards of
    at most shard_bytes with an index. Everything goes to dst.tmp-XXXX first and is renamed to dst
    at the end, so a failure never leaves a dst that loads. An existing dst is replaced only with
    force=True. progress: a bar with an ETA on stderr (None: when stderr is a terminal); without
    one, log gets a line at every tenth of the work instead.
    """
    from .config import Exaone4Config
    from .progress import Progress

    src, dst = Path(src), Path(dst)
    log = log or (lambda _msg: None)
    if not src.is_dir():
        raise FileNotFoundError(f"source model directory {src} does not exist" if not src.exists()
                                else f"{src} is not a directory")
    if dst.exists() and not force:
        raise DestinationExistsError(f"{dst} already exists (use --force to replace it)")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"destination {dst} must not be the source directory or inside it")
    if dst.resolve() in src.resolve().parents:  # replacing it (--force) would delete the source
        raise ValueError(f"destination {dst} must not contain the source directory {src}")
    if checkpoint_quantization(src) is not None:
        raise ValueError(f"{src} is already quantized")
    if isinstance(shard_bytes, bool) or not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise ValueError(f"shard size must be a positive number of bytes, got {shard_bytes!r}")
    config = Exaone4Config.from_pretrained(src)  # validates the config before any work
    raw_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tensors = load_checkpoint_tensors(src)
    plan = _plan(tensors, spec, bool(config.tie_word_embeddings))
    shards = _shards(plan, shard_bytes)
    total_in = sum(tensors[name].data.nbytes for name, _ in plan)
    total_out = sum(e.nbytes for _, entries in plan for e in entries)
    log(f"quantizing {src} -> {dst} ({spec.name}): {len(plan)} tensors, {total_in / 2**20:.1f} MiB -> "
        f"{total_out / 2**20:.1f} MiB in {len(shards)} file(s)")

    def produce(name: str, t: Tensor) -> dict[str, np.ndarray]:
        role = _role(name)
        format = spec.format_for(role) if role else None
        if format is not None:
            q = QuantLinear.quantize(t.data, t.wtype, format, spec.group_size)
            base = name[: -len(".weight")]
            out = {f"{base}.qweight": q.qweight, f"{base}.scales": q.scales}
            if q.mins is not None:
                out[f"{base}.mins"] = q.mins
            return out
        if role == "head":
            return {name: _bf16_of(t).data}
        return {name: t.data}

    done = [0, 0]  # tensors, bytes
    t_start = time.perf_counter()
    bar = Progress(total_in, "quantizing", unit="B", enabled=progress, unit_scale=True, unit_divisor=1024)

    def report(name: str, entries: list[_Entry], seconds: float) -> None:
        done[0] += 1
        t = tensors[name]
        before = done[1] * 10 // max(total_in, 1)
        done[1] += t.data.nbytes
        bar.update(t.data.nbytes, name)
        if not bar.enabled and (done[1] * 10 // max(total_in, 1) > before or done[0] == len(plan)):
            elapsed = time.perf_counter() - t_start
            left = elapsed * (total_in - done[1]) / max(done[1], 1)
            log(f"[{done[0]}/{len(plan)} tensors, {100 * done[1] // max(total_in, 1)} %] {name} "
                f"({elapsed:.1f} s, about {left:.0f} s left)")

    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(dst, log)
    # Named before it exists and made inside the try: an interrupt (Ctrl-C, SIGTERM) arriving right
    # after the directory appears still removes it (with mkdtemp it could come before `tmp` was set).
    tmp = dst.parent / f"{dst.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        os.chmod(tmp, 0o755)  # whatever the umask: the result is an ordinary model directory
        (tmp / _OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
        metadata = {"format": "pt", "format_version": str(FORMAT_VERSION), "quant_method": QUANT_METHOD,
                    "quantization": spec.name}
        names = (["model.safetensors"] if len(shards) == 1 else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
        weight_map = {}
        for file, items in zip(names, shards):
            _write_shard(tmp / file, items, metadata, produce, tensors, report)
            for _, entries in items:
                for e in entries:
                    weight_map[e.name] = file
        if len(shards) > 1:
            index = {"metadata": {"total_size": total_out, "format_version": FORMAT_VERSION}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for pattern in _COPY_PATTERNS:
            for f in src.glob(pattern):
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        raw_config["quantization_config"] = spec.to_config()
        # config.json last: a directory without it is never mistaken for a model
        (tmp / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n", encoding="utf-8")
        (tmp / _OWNER_FILE).unlink()
        if dst.exists():
            if not force:
                raise DestinationExistsError(f"{dst} appeared while quantizing (use --force to replace it)")
            old = Path(tempfile.mkdtemp(prefix=dst.name + ".old-", dir=dst.parent))
            os.replace(dst, old / dst.name)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    log(f"wrote {dst} in {time.perf_counter() - t_start:.1f} s")
    return dst


def bits_per_weight(spec: QuantSpec, role: str = "body") -> float:
    """Storage bits per weight of the format (scales and mins included, for a full group)."""
    format = spec.format_for(role)
    if format is None:
        return 16.0
    g = spec.group_size
    bits = 8 if format == _core.QuantFormat.Q8G else 4
    per_group = 16 * (2 if format == _core.QuantFormat.Q4GA else 1)
    return bits + (0.0 if g == 0 else per_group / g)
