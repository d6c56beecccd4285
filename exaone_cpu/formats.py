"""Weight formats of GGUF files: one traits table (ggml's `type_traits`) that says, for every block
type exaone_cpu reads, its ggml type id, values per block, bytes per block and the reference
dequantizer. The GGUF reader (exaone_cpu.gguf_file) checks tensor sizes with it, the loader picks a
type's kernel layout from it (exaone_cpu.gguf_model) and the tests hold every dequantizer to the `gguf`
package's.

The dequantizers are plain numpy written from the block layouts of ggml-common.h. They compute in
float32 in the order ggml's reference C does (sub-block scale = d * sc first, then scale * q - min),
so the values are the ones llama.cpp's reference dequantization gives, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

QK_K = 256  # values per K-quant super-block


def _f16(b: np.ndarray) -> np.ndarray:
    """[n, 2] uint8 -> [n, 1] float32 (little-endian IEEE half)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[n, m] uint8 -> [n, 2, m]: the low nibbles, then the high nibbles."""
    return np.stack([qs & 0x0F, qs >> 4], axis=1)


def _dq_f32(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f4").astype(np.float32)


def _dq_f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _dq_bf16(b: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(b).view("<u2").astype(np.uint32) << 16).view(np.float32)


def _dq_q8_0(b: np.ndarray) -> np.ndarray:
    # block_q8_0: f16 d; int8 qs[32]. x = d * q
    d = _f16(b[:, :2])
    return d * b[:, 2:].view(np.int8).astype(np.float32)


def _dq_q4_0(b: np.ndarray) -> np.ndarray:
    # block_q4_0: f16 d; qs[16]: x[j] = low nibble of qs[j], x[j + 16] = high nibble; x = d * (u - 8)
    d = _f16(b[:, :2])
    u = _nibbles(b[:, 2:]).reshape(-1, 32).astype(np.int8) - np.int8(8)
    return d * u.astype(np.float32)


def _k_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit (scale, min) pairs packed in a Q4_K / Q5_K block's 12 bytes: for j < 4, scale
    = s[j] & 63 and min = s[j + 4] & 63; for j >= 4 the low 4 bits come from s[j + 4] (scale: low
    nibble, min: high nibble) and the top 2 bits from the top bits of s[j - 4] / s[j]."""
    s = s.astype(np.uint8)
    lo = s[:, 0:4]
    mid = s[:, 4:8]
    hi = s[:, 8:12]
    sc = np.concatenate([lo & 63, (hi & 0x0F) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc, mn


@dataclass(frozen=True)
class KBlocks:
    """K-quant blocks unpacked (n blocks of 256 values): integer codes, per-block f16 d (and dmin)
    as uint16 bits, per-group sub-scales c (and min codes mc). A value is (d * c) * code - dmin * mc,
    each product in f32 as ggml's reference computes it."""

    codes: np.ndarray  # [n, 256] int8 (signed codes) or uint8
    d: np.ndarray  # [n] uint16
    c: np.ndarray  # [n, groups] int8 (no min) or uint8
    dmin: np.ndarray | None = None  # [n] uint16
    mc: np.ndarray | None = None  # [n, groups] uint8

    @property
    def group(self) -> int:
        return QK_K // self.c.shape[1]

    def dequantize(self) -> np.ndarray:
        n, groups = self.c.shape
        d = self.d.view("<f2").astype(np.float32)[:, None]
        scale = (d * self.c.astype(np.float32))[:, :, None]
        codes = self.codes.reshape(n, groups, -1).astype(np.float32)
        if self.dmin is None:
            return (scale * codes).reshape(n, QK_K)
        dmin = self.dmin.view("<f2").astype(np.float32)[:, None]
        mins = (dmin * self.mc.astype(np.float32))[:, :, None]
        return (scale * codes - mins).reshape(n, QK_K)


def _u16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<u2").reshape(-1)


def _unpack_q4_k(b: np.ndarray) -> KBlocks:
    # block_q4_K: f16 d, f16 dmin, scales[12], qs[128]. 8 sub-blocks of 32: sub-block j uses
    # qs[32 * (j // 2) ...] low nibbles (j even) or high nibbles (j odd); x = (d * sc) * u - dmin * m
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    qs = b[:, 16:144].reshape(n, 4, 32)
    u = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, QK_K)
    return KBlocks(u, _u16(b[:, 0:2]), sc, _u16(b[:, 2:4]), mn)


def _unpack_q5_k(b: np.ndarray) -> KBlocks:
    # block_q5_K: f16 d, f16 dmin, scales[12], qh[32], qs[128]. Like Q4_K with a fifth bit: bit j of
    # qh[l] is the high bit of value l of sub-block j.
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    qh = b[:, 16:48]
    qs = b[:, 48:176].reshape(n, 4, 32)
    low = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)  # sub-block j = 2 * (j // 2) + nibble
    high = np.stack([(qh >> j) & 1 for j in range(8)], axis=1)  # [n, 8, 32]
    return KBlocks((low | (high << 4)).reshape(n, QK_K), _u16(b[:, 0:2]), sc, _u16(b[:, 2:4]), mn)


def _unpack_q6_k(b: np.ndarray) -> KBlocks:
    # block_q6_K: ql[128], qh[64], int8 scales[16], f16 d. Two halves of 128 values; in half h, value
    # l + 32 * i (i = 0..3, l = 0..31) has low 4 bits from ql[64h + l + 32 * (i & 1)] (low nibble for
    # i < 2, high for i >= 2) and high 2 bits from qh[32h + l] >> (2 * i). x = (d * sc) * (q - 32),
    # one scale per 16 values.
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 2, 32)  # [n, half, i & 1, l]
    qh = b[:, 128:192].reshape(n, 2, 32)  # [n, half, l]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # [n, half, i, l] for i = 0..3
    high = np.stack([(qh >> (2 * i)) & 3 for i in range(4)], axis=2)  # [n, half, i, l]
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)
    return KBlocks(q.reshape(n, QK_K), _u16(b[:, 208:210]), np.ascontiguousarray(b[:, 192:208]).view(np.int8))


IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)


def _unpack_iq4_xs(b: np.ndarray) -> KBlocks:
    # block_iq4_xs: f16 d, u16 scales_h, scales_l[4], qs[128]. 8 sub-blocks of 32 with 6-bit scales
    # ls (low 4 bits: nibble j of scales_l, high 2 bits: bits 2j..2j+1 of scales_h); sub-block j's
    # values are IQ4_VALUES of qs[16j ...] low nibbles then high nibbles; x = (d * (ls - 32)) * value.
    n = b.shape[0]
    sh = np.ascontiguousarray(b[:, 2:4]).view("<u2").astype(np.uint32)  # [n, 1]
    sl = b[:, 4:8]
    low = np.stack([sl & 0x0F, sl >> 4], axis=2).reshape(n, 8).astype(np.uint32)
    high = (sh >> (2 * np.arange(8, dtype=np.uint32))) & 3
    ls = ((low | (high << 4)).astype(np.int32) - 32).astype(np.int8)
    u = _nibbles(b[:, 8:136].reshape(n * 8, 16)).reshape(n, QK_K)
    return KBlocks(IQ4_VALUES[u], _u16(b[:, 0:2]), ls)


@dataclass(frozen=True)
class GGMLType:
    """One ggml block type: values per block, bytes per block, the reference dequantizer (uint8
    [n_blocks, type_size] -> float32 [n_blocks, block_size]) and the kernel format of ours that
    holds its values exactly (exaone_cpu._core.QuantFormat name and group size; None: a float type
    used as stored). K types also unpack into KBlocks, which both the dequantizer and the loader
    use."""

    name: str
    id: int
    block_size: int
    type_size: int
    dequantize_blocks: Callable[[np.ndarray], np.ndarray]
    kernel: tuple[str, int] | None = None
    unpack: Callable[[np.ndarray], KBlocks] | None = None

    def row_bytes(self, values: int) -> int:
        return values // self.block_size * self.type_size

    def dequantize(self, data: np.ndarray, values_per_row: int) -> np.ndarray:
        """Rows of this type (uint8 [..., row_bytes]) -> float32 [..., values_per_row]."""
        raw = np.ascontiguousarray(data, dtype=np.uint8)
        lead = raw.shape[:-1]
        blocks = raw.reshape(-1, self.type_size)
        out = self.dequantize_blocks(blocks).astype(np.float32, copy=False)
        return out.reshape(*lead, values_per_row)


def _k(unpack: Callable[[np.ndarray], KBlocks]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda b: unpack(b).dequantize()


GGML_TYPES: dict[int, GGMLType] = {t.id: t for t in (
    GGMLType("F32", 0, 1, 4, _dq_f32),
    GGMLType("F16", 1, 1, 2, _dq_f16),
    GGMLType("Q4_0", 2, 32, 18, _dq_q4_0, ("Q4G", 32)),
    GGMLType("Q8_0", 8, 32, 34, _dq_q8_0, ("Q8G", 32)),
    GGMLType("Q4_K", 12, QK_K, 144, _k(_unpack_q4_k), ("Q4KA", 32), _unpack_q4_k),
    GGMLType("Q5_K", 13, QK_K, 176, _k(_unpack_q5_k), ("Q8KA", 32), _unpack_q5_k),
    GGMLType("Q6_K", 14, QK_K, 210, _k(_unpack_q6_k), ("Q6K", 16), _unpack_q6_k),
    GGMLType("IQ4_XS", 23, QK_K, 136, _k(_unpack_iq4_xs), ("Q8K", 32), _unpack_iq4_xs),
    GGMLType("BF16", 30, 1, 2, _dq_bf16),
)}
GGML_TYPE_BY_NAME = {t.name: t for t in GGML_TYPES.values()}

# ggml type ids exaone_cpu knows by name but does not read (so an error can name them).
GGML_OTHER_TYPE_NAMES = {
    3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 24: "I8",
    25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}


def ggml_type_name(type_id: int) -> str:
    t = GGML_TYPES.get(type_id)
    return t.name if t else GGML_OTHER_TYPE_NAMES.get(type_id, f"unknown type {type_id}")
