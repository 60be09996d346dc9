"""Quantized checkpoint tensors in transit, and the stored rows a parameter keeps instead of floats.

A GGUF checkpoint stores most matrices as blocks of a quantized type (Q4_K, Q8_0, ...): each row of
``K`` values is ``K / block_size`` blocks of ``type_size`` bytes. When the chosen linear kernel computes
on those blocks, the loader hands the models a :class:`QuantizedTensor` for each of them: a
``torch.Tensor`` of the logical shape ``[N, K]`` (float32) that holds only the raw bytes
``uint8 [N, row_bytes]`` and the GGML type id. The tensor-parallel layers' ``weight_loader``
(:mod:`heron.layers.parallel`) recognise it and keep the bytes: their rows (a shard, a fused part,
a vocabulary slice) are plain row slices, and a row-parallel input slice is a byte slice when it
falls on block boundaries. They attach a :class:`StoredWeight` to the parameter (``param.stored``)
and free its float storage, and the linear kernel reads it in ``convert``. Any other code that
touches a :class:`QuantizedTensor` as a tensor (``param.copy_(t)``, ``t.T``, ``t - 1``) gets the
dequantized float32 values, so a model that loads weights its own way still loads them exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_map

__all__ = ("QuantizedPart", "QuantizedTensor", "StoredWeight", "block_shape", "dequantize_rows", "store_rows",
           "stored_weight")


@functools.cache
def block_shape(qtype: int) -> tuple[int, int]:
    """(values per block, bytes per block) of GGML type ``qtype``."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    return int(block), int(size)


def dequantize_rows(raw: torch.Tensor, qtype: int) -> torch.Tensor:
    """``raw`` uint8 [n, row_bytes] of type ``qtype`` -> float32 [n, K] on ``raw``'s device (``gguf`` on the CPU)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    values = dequantize(raw.detach().cpu().numpy(), GGMLQuantizationType(qtype))
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(raw.device)


class QuantizedTensor(torch.Tensor):
    """A quantized ``[N, K]`` matrix: raw blocks ``uint8 [N, row_bytes]`` plus the GGML type id.

    Args:
        raw: the rows' bytes as the file stores them.
        qtype: the GGML type id (``int(gguf.GGMLQuantizationType.Q4_K)``).
        shape: the logical (dequantized) shape ``(N, K)``.
    """

    raw: torch.Tensor
    qtype: int

    @staticmethod
    def __new__(cls, raw: torch.Tensor, qtype: int, shape: tuple[int, int]) -> QuantizedTensor:
        block, size = block_shape(int(qtype))
        if raw.dtype != torch.uint8 or raw.dim() != 2 or raw.shape != (shape[0], shape[1] // block * size):
            raise ValueError(f"raw blocks {tuple(raw.shape)} ({raw.dtype}) do not hold a {shape} matrix of type {qtype}.")
        out = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=torch.float32, device=raw.device)
        out.raw, out.qtype = raw, int(qtype)
        return out

    def __repr__(self) -> str:  # type: ignore[override]
        return f"QuantizedTensor(shape={tuple(self.shape)}, qtype={self.qtype})"

    def dequantize(self) -> torch.Tensor:
        """float32 ``[N, K]`` (a new tensor)."""
        return dequantize_rows(self.raw, self.qtype)

    def rows(self, start: int, count: int) -> QuantizedTensor:
        """Rows ``start .. start+count`` (a view of the same bytes)."""
        return QuantizedTensor(self.raw[start : start + count], self.qtype, (count, self.shape[1]))

    def cols(self, start: int, count: int) -> QuantizedTensor | None:
        """Input columns ``start .. start+count`` of every row, or None when they do not fall on block boundaries."""
        block, size = block_shape(self.qtype)
        if start % block or count % block:
            return None
        first, width = start // block * size, count // block * size
        return QuantizedTensor(self.raw[:, first : first + width], self.qtype, (self.shape[0], count))

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # any tensor operation sees the dequantized float32 values
        def plain(value: Any) -> Any:
            return value.dequantize() if isinstance(value, QuantizedTensor) else value

        return func(*tree_map(plain, args), **tree_map(plain, kwargs or {}))


@dataclass(slots=True)
class QuantizedPart:
    """Rows ``row .. row + data.shape[0]`` of a parameter, stored as blocks of type ``qtype``."""

    row: int
    qtype: int
    data: torch.Tensor  # uint8 [rows, row_bytes]

    @property
    def num_rows(self) -> int:
        return int(self.data.shape[0])

    @staticmethod
    def join(parts: list[QuantizedPart]) -> list[QuantizedPart]:
        """``parts`` in row order, adjacent parts of one type joined (plain byte concatenation)."""
        merged: list[QuantizedPart] = []
        for part in sorted(parts, key=lambda p: p.row):
            last = merged[-1] if merged else None
            if last is not None and last.qtype == part.qtype and last.row + last.num_rows == part.row:
                merged[-1] = QuantizedPart(last.row, last.qtype, torch.cat([last.data, part.data]))
            else:
                merged.append(part)
        return merged


@dataclass(slots=True)
class StoredWeight:
    """What a parameter holds instead of floats: quantized parts covering its rows, in row order, adjacent
    parts of one type joined (the fused parts of q/k/v or gate/up may differ in type)."""

    shape: tuple[int, int]  # the parameter's (rows, in_features)
    parts: list[QuantizedPart] = field(default_factory=list)

    def complete(self) -> bool:
        """Whether the parts cover every row."""
        return sum(p.num_rows for p in self.parts) == self.shape[0]

    def dequantize(self, floats: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``[rows, in_features]`` of the whole parameter; rows no part covers come from ``floats``
        (the parameter, when some fused part was stored as floats)."""
        if self.complete():
            return torch.cat([dequantize_rows(p.data, p.qtype) for p in self.parts])
        if floats is None:
            raise ValueError("the stored parts do not cover every row and no float rows were given.")
        out = floats.detach().float().clone()
        for p in self.parts:
            out[p.row : p.row + p.num_rows] = dequantize_rows(p.data, p.qtype).to(out.device)
        return out

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 ``[T, in_features]`` rows ``ids`` (an embedding lookup that dequantizes only those rows)."""
        (part,) = self.parts  # an embedding is one tensor of one type
        if ids.numel() == 1:  # a single-stream decode step
            return dequantize_rows(part.data[ids.reshape(1)], part.qtype)
        unique, inverse = torch.unique(ids, return_inverse=True)
        return dequantize_rows(part.data[unique], part.qtype)[inverse]


def stored_weight(param: torch.Tensor | None) -> StoredWeight | None:
    """The :class:`StoredWeight` a parameter carries, or None when it holds plain floats."""
    return getattr(param, "stored", None)


def store_rows(param: torch.Tensor, row: int, tensor: QuantizedTensor) -> None:
    """Keep ``tensor``'s blocks as rows ``row ..`` of ``param``; once every row is stored, free its floats.

    Raises:
        ValueError: ``tensor``'s columns do not match the parameter's.
    """
    if param.dim() != 2 or tensor.shape[1] != param.shape[1]:
        raise ValueError(f"a quantized {tuple(tensor.shape)} tensor cannot fill rows of a {tuple(param.shape)} parameter.")
    stored = stored_weight(param)
    if stored is None:
        stored = StoredWeight((int(param.shape[0]), int(param.shape[1])))
        param.stored = stored  # type: ignore[attr-defined]
    data = tensor.raw.to(param.device).contiguous()
    if data.untyped_storage().nbytes() != data.numel():
        data = data.clone()  # a slice of a larger tensor (this rank's shard): do not keep the rest alive
    stored.parts = QuantizedPart.join([*stored.parts, QuantizedPart(row, tensor.qtype, data)])
    if stored.complete():
        # keep shape and dtype (counts, kernels' checks) without the float storage: one element, expanded
        param.data = torch.zeros((), dtype=param.dtype, device=param.device).expand(param.shape)
