"""Reading Hugging Face checkpoints: safetensors files, single or sharded, memory-mapped.

The header of every file is validated before any tensor is touched (dtype names, shapes, offsets
inside the file), so a truncated or corrupt file raises CheckpointError instead of reading garbage.
Tensors are zero-copy views of one read-only memory map per file; bf16 tensors are uint16 bit
patterns (numpy has no bfloat16).
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _core

# safetensors dtype name -> (numpy storage dtype, element format for the kernels or None)
DTYPES = {
    "F32": (np.dtype(np.float32), _core.WeightType.F32),
    "BF16": (np.dtype(np.uint16), _core.WeightType.BF16),
    "F16": (np.dtype(np.uint16), _core.WeightType.F16),
    "F64": (np.dtype(np.float64), None),
    "I64": (np.dtype(np.int64), None),
    "I32": (np.dtype(np.int32), None),
    "I16": (np.dtype(np.int16), None),
    "I8": (np.dtype(np.int8), None),
    "U8": (np.dtype(np.uint8), None),
    "BOOL": (np.dtype(np.bool_), None),
}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, truncated or holds a tensor we cannot use."""


@dataclass(frozen=True)
class Tensor:
    """A tensor as stored: `data` is a read-only view of the file (uint16 for bf16/f16)."""

    name: str
    dtype: str  # safetensors name: "F32", "BF16", "F16", ...
    data: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def wtype(self):
        """The kernels' element format, or None for dtypes they do not take as weights."""
        return DTYPES[self.dtype][1]

    def release(self) -> None:
        """Drops this tensor's pages of a memory-mapped file from the process (they stay in the page
        cache and are read back if used again): a pass over a whole checkpoint (exaone-quantize)
        then holds about one tensor in memory, not every tensor it has read. No-op for a copy in
        memory or where the platform has no MADV_DONTNEED."""
        base = self.data
        while base is not None and not isinstance(base, np.memmap):
            base = base.base
        mm = getattr(base, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or self.data.nbytes == 0:
            return
        offset = self.data.ctypes.data - np.frombuffer(mm, np.uint8).ctypes.data  # within the mapping
        start = offset - offset % mmap.PAGESIZE
        end = min(offset + self.data.nbytes, len(mm))
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass  # only a hint

    def to_f32(self) -> np.ndarray:
        """A float32 copy (for small tensors such as norm weights)."""
        if self.dtype == "F32":
            return np.array(self.data, dtype=np.float32)
        if self.dtype in ("BF16", "F16"):
            return _core.to_f32(np.ascontiguousarray(self.data), self.wtype)
        if self.dtype == "F64":
            return self.data.astype(np.float32)
        raise CheckpointError(f"tensor {self.name!r} has dtype {self.dtype}, expected a float type")


def read_safetensors(path: Path, mmap: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Validates one .safetensors file and returns its tensors (as views) and its metadata.

    mmap: the tensors are views of the memory-mapped file (no copy; the file must not change while
    they are in use: a file truncated or rewritten in place makes the process fail with SIGBUS or
    see the new bytes). False reads the file into memory instead."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: file is {size} bytes, too short for a safetensors header")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER or 8 + header_len > size:
                raise CheckpointError(
                    f"{path}: header length {header_len} does not fit in a {size}-byte file "
                    "(truncated or not a safetensors file)"
                )
            header_bytes = f.read(header_len)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, nesting, a huge integer
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must map names to strings")
    data_start = 8 + header_len
    data_size = size - data_start

    if size <= data_start:
        mm = np.zeros(0, np.uint8)
    elif mmap:
        mm = np.memmap(path, dtype=np.uint8, mode="r")
    else:
        try:
            mm = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e}") from None
        if mm.size != size:
            raise CheckpointError(f"{path} changed while it was read ({size} bytes, then {mm.size})")
    tensors: dict[str, Tensor] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r}: {info!r}") from None
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{path}: tensor {name!r} has a bad shape {shape!r}")
        np_dtype = DTYPES[dtype][0]
        nbytes = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise CheckpointError(f"{path}: tensor {name!r} has bad data_offsets {[begin, end]}")
        if end - begin != nbytes:
            raise CheckpointError(
                f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs {nbytes} bytes "
                f"but its offsets span {end - begin}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {end} of the data section but the file holds "
                f"only {data_size} (truncated file)"
            )
        view = mm[data_start + begin : data_start + end].view(np_dtype).reshape(shape)
        tensors[name] = Tensor(name, dtype, view)
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap in the data section")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def load_checkpoint_tensors(path: str | Path, check_metadata=None, mmap: bool = True) -> dict[str, Tensor]:
    """All tensors of a Hugging Face model directory: model.safetensors, or shards + index.
    check_metadata(file, metadata), when given, vets each file's safetensors metadata; mmap as in
    read_safetensors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory (expected a Hugging Face model directory)")
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    def read(file: Path) -> dict[str, Tensor]:
        tensors, metadata = read_safetensors(file, mmap)
        if check_metadata is not None:
            check_metadata(file, metadata)
        return tensors

    if single.is_file():
        return read(single)
    if not index.is_file():
        raise FileNotFoundError(
            f"{path} has neither model.safetensors nor model.safetensors.index.json "
            "(only safetensors checkpoints are supported)"
        )
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    shards = sorted(set(weight_map.values()))
    root = path.resolve()
    tensors: dict[str, Tensor] = {}
    for shard in shards:
        file = path / shard
        if file.resolve().parent != root:
            raise CheckpointError(f"{index}: shard {shard!r} is not a file of the model directory")
        if not file.is_file():
            raise FileNotFoundError(f"shard {shard} listed in {index.name} is missing from {path}")
        for name, tensor in read(file).items():
            if weight_map.get(name) == shard:
                tensors[name] = tensor
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise CheckpointError(f"tensors listed in {index.name} but absent from their shard: {missing[:5]}")
    return tensors
