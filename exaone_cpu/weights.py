"""Weights as the forward pass uses them: a float Linear in its stored format (memory-mapped), and
the reader that takes a checkpoint's tensors by name, checking shape and dtype, and hands out
Linear or quantized (exaone_cpu.quant) projections."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _core
from .checkpoint import CheckpointError, Tensor

if TYPE_CHECKING:
    from .quant import QuantLinear, WeightQuantizer


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


class WeightReader:
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
