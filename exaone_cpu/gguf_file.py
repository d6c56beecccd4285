"""Reading GGUF files (llama.cpp's model format, versions 2 and 3): the metadata key/values and the
tensors, memory-mapped in their block formats.

Everything in the header is checked before a tensor is touched: value types, string and array
lengths against the bytes that remain, tensor dimensions, block types (exaone_cpu.formats), offsets
aligned and inside the data section, tensors not overlapping. A truncated or corrupt file raises
GGUFError naming the file and the field, never reads past its end.
"""

from __future__ import annotations

import mmap as _mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError
from .formats import GGML_TYPES, GGMLType, ggml_type_name

MAGIC = b"GGUF"
ARCH = "exaone4"  # general.architecture of EXAONE 4 files
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 4

# value type id -> (name, struct format or None for string / array)
_SCALARS = {
    0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"),
    4: ("UINT32", "<I"), 5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<?"),
    10: ("UINT64", "<Q"), 11: ("INT64", "<q"), 12: ("FLOAT64", "<d"),
}
_STRING, _ARRAY = 8, 9
_NUMPY_OF = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 10: "<u8", 11: "<i8", 12: "<f8"}


class GGUFError(CheckpointError):
    """A GGUF file is malformed, truncated, or holds something exaone_cpu cannot use."""


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor as stored: `data` is a read-only uint8 view [rows, row_bytes] of the file (rows:
    the product of every dimension but the first), `shape` the row-major shape (GGUF's dimensions
    reversed: a weight of ne = [in, out] is [out, in])."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def dequantize(self) -> np.ndarray:
        """float32 copy in `shape` (reference dequantization, for small tensors such as norms)."""
        return self.type.dequantize(self.data, self.shape[-1]).reshape(self.shape)


class _Cursor:
    def __init__(self, buf, path: Path):
        self.buf = buf
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"truncated: {what} needs {n} bytes at offset {self.pos}, "
                            f"the file has {len(self.buf) - self.pos} left")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what + " length")
        raw = self.take(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def strings(self, count: int, what: str) -> list[str]:
        """count strings in a row (a vocabulary: 100k+ of them), in one tight loop."""
        buf, pos, end, out = self.buf, self.pos, len(self.buf), []
        from_bytes = int.from_bytes
        try:
            for _ in range(count):
                n = from_bytes(buf[pos:pos + 8], "little")
                pos += 8
                if pos + n > end:
                    raise self.fail(f"truncated: a string of {what} needs {n} bytes at offset {pos}")
                out.append(buf[pos:pos + n].decode("utf-8"))
                pos += n
        except UnicodeDecodeError:
            raise self.fail(f"{what} holds a string that is not valid UTF-8") from None
        if pos > end:
            raise self.fail(f"truncated: {what} runs past the end of the file")
        self.pos = pos
        return out

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            v = self.scalar(_SCALARS[vtype][1], what)
            return bool(v) if vtype == 7 else v
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise self.fail(f"{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
            etype = self.scalar("<I", what + " element type")
            count = self.scalar("<Q", what + " element count")
            if etype in _NUMPY_OF:
                size = np.dtype(_NUMPY_OF[etype]).itemsize
                if count > (len(self.buf) - self.pos) // size:
                    raise self.fail(f"truncated: {what} claims {count} elements, more than the file holds")
                arr = np.frombuffer(self.take(count * size, what), dtype=_NUMPY_OF[etype]).copy()
                return arr.tolist()
            if etype == 7:
                if count > len(self.buf) - self.pos:
                    raise self.fail(f"truncated: {what} claims {count} elements, more than the file holds")
                return [b != 0 for b in bytes(self.take(count, what))]
            if etype == _STRING:
                if count > (len(self.buf) - self.pos) // 8:  # every string takes at least its length field
                    raise self.fail(f"truncated: {what} claims {count} strings, more than the file holds")
                return self.strings(count, what)
            if etype == _ARRAY:
                if count > (len(self.buf) - self.pos) // 12:
                    raise self.fail(f"truncated: {what} claims {count} arrays, more than the file holds")
                return [self.value(_ARRAY, what, depth + 1) for _ in range(count)]
            raise self.fail(f"{what}: unknown array element type {etype}")
        raise self.fail(f"{what}: unknown value type {vtype}")


class GGUFFile:
    """A parsed GGUF file: `metadata` (key -> value), `tensors` (name -> GGUFTensor, in file order),
    `version`, `alignment`. The tensors stay valid as long as this object (its memory map) lives."""

    def __init__(self, path: str | Path, *, mmap: bool = True):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = self.path.stat().st_size
                if size < 24:
                    raise GGUFError(f"{self.path}: file is {size} bytes, too short for a GGUF header")
                if mmap:
                    buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
                else:
                    buf = f.read()
        except OSError as e:
            raise GGUFError(f"cannot read {self.path}: {e.strerror or e}") from None
        self._buf = buf
        cur = _Cursor(buf, self.path)
        magic = bytes(cur.take(4, "magic"))
        if magic != MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (starts with {magic!r}, expected {MAGIC!r})")
        self.version = cur.scalar("<I", "version")
        if self.version not in VERSIONS:
            hint = " (a big-endian file?)" if self.version > 0xFFFF else ""
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not supported{hint}; "
                            f"exaone_cpu reads versions {', '.join(map(str, VERSIONS))}")
        n_tensors = cur.scalar("<Q", "tensor count")
        n_kv = cur.scalar("<Q", "metadata count")
        if n_kv > len(buf) // 13 or n_tensors > len(buf) // 29:  # the smallest entry of each kind
            raise GGUFError(f"{self.path}: header claims {n_kv} metadata entries and {n_tensors} tensors, "
                            "more than the file can hold")
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, int] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in self.metadata:
                raise GGUFError(f"{self.path}: metadata key {key!r} appears twice")
            vtype = cur.scalar("<I", f"type of {key!r}")
            self.metadata[key] = cur.value(vtype, f"metadata {key!r}")
            self.value_types[key] = vtype
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 1
                or alignment & (alignment - 1) or alignment > 1 << 20):
            raise GGUFError(f"{self.path}: general.alignment must be a power of two, got {alignment!r}")
        self.alignment = alignment

        infos = []
        for i in range(n_tensors):
            name = cur.string(f"name of tensor #{i}")
            n_dims = cur.scalar("<I", f"dimension count of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
            ne = [cur.scalar("<Q", f"dimensions of {name!r}") for _ in range(n_dims)]
            type_id = cur.scalar("<I", f"type of {name!r}")
            offset = cur.scalar("<Q", f"offset of {name!r}")
            infos.append((name, ne, type_id, offset))
        data_start = -(-cur.pos // alignment) * alignment
        data_size = len(buf) - data_start
        if data_size < 0:
            raise GGUFError(f"{self.path}: truncated: the data section would start at {data_start}, past the end")

        self.tensors: dict[str, GGUFTensor] = {}
        spans = []
        for name, ne, type_id, offset in infos:
            if name in self.tensors:
                raise GGUFError(f"{self.path}: tensor {name!r} appears twice")
            t = GGML_TYPES.get(type_id)
            if t is None:
                raise GGUFError(f"{self.path}: tensor {name!r} has block type {ggml_type_name(type_id)}, "
                                f"which exaone_cpu does not read (it reads {', '.join(x.name for x in GGML_TYPES.values())})")
            if any(d < 1 or d > 1 << 40 for d in ne):
                raise GGUFError(f"{self.path}: tensor {name!r} has dimensions {ne}")
            if ne[0] % t.block_size:
                raise GGUFError(f"{self.path}: tensor {name!r} ({t.name}) has {ne[0]} values per row, "
                                f"not a multiple of the block size {t.block_size}")
            rows = 1
            for d in ne[1:]:
                rows *= d
            row_bytes = t.row_bytes(ne[0])
            nbytes = rows * row_bytes
            if offset % alignment:
                raise GGUFError(f"{self.path}: tensor {name!r} offset {offset} is not aligned to {alignment}")
            if offset > data_size or nbytes > data_size - offset:
                raise GGUFError(f"{self.path}: truncated: tensor {name!r} ({t.name} {ne}) needs bytes "
                                f"{offset}..{offset + nbytes} of a data section of {data_size}")
            spans.append((offset, offset + nbytes, name))
            data = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=data_start + offset)
            self.tensors[name] = GGUFTensor(name, t, tuple(reversed(ne)), data.reshape(rows, row_bytes))
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise GGUFError(f"{self.path}: tensors {an!r} and {bn!r} overlap in the file")

    def release_pages(self, tensor: GGUFTensor | None = None) -> None:
        """Drops the mapped file's pages (all, or those inside one tensor's bytes) from this
        process's memory once repacked weights no longer need them: MADV_DONTNEED, after which a
        read-only file mapping is re-read from the file if touched again. Nothing to do for a file
        read into memory or where madvise is missing."""
        if not (isinstance(self._buf, _mmap.mmap) and hasattr(_mmap, "MADV_DONTNEED")):
            return
        if tensor is None:
            self._buf.madvise(_mmap.MADV_DONTNEED)
            return
        base = np.frombuffer(self._buf, dtype=np.uint8, count=1).ctypes.data
        start = tensor.data.ctypes.data - base
        page = _mmap.PAGESIZE
        first, last = -(-start // page) * page, (start + tensor.nbytes) // page * page  # whole pages only
        if last > first:
            self._buf.madvise(_mmap.MADV_DONTNEED, first, last - first)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def get(self, key: str, kind: type | tuple, default: Any = None, *, required: bool = False) -> Any:
        """metadata[key] checked to be of `kind` (bool is not an int here)."""
        if key not in self.metadata:
            if required:
                raise GGUFError(f"{self.path}: metadata {key!r} is missing")
            return default
        v = self.metadata[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            ok, v = True, float(v)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise GGUFError(f"{self.path}: metadata {key!r} must be {names}, got {type(v).__name__} {v!r:.80}")
        return v


def is_gguf(path: str | Path) -> bool:
    """True when path is a file that starts with the GGUF magic."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return p.is_file() and f.read(4) == MAGIC
    except OSError:
        return False


def open_gguf(path: str | Path, *, mmap: bool = True) -> GGUFFile:
    """A parsed GGUF file whose general.architecture is EXAONE 4's (GGUFError otherwise)."""
    f = GGUFFile(path, mmap=mmap)
    if f.architecture != ARCH:
        raise GGUFError(f"{f.path}: general.architecture is {f.architecture!r}; exaone_cpu runs EXAONE 4 "
                        f"({ARCH!r}) models")
    return f
