"""LoRA under tensor parallelism: this rank's slice of an adapter, and where the delta joins the collective.

A column-parallel projection (:class:`heron.layers.ColumnParallelLinear` and its fused kinds) holds
this rank's output rows of each fused part (``spans``): every rank keeps the full ``A`` ``[r, in]``
and only its rows of ``B``. A row-parallel projection holds this rank's input columns
(``in_span``) and sums the partial outputs over the ranks: every rank keeps its columns of ``A``
and the full ``B``, and the delta ``x_local A_local^T B`` is added before the all-reduce, so the
sum counts it once. :func:`layout_of` reads the split from the module (or the module a linear
kernel or a LoRA wrapper holds), :func:`place_shard` cuts and checks one PEFT module's weights,
:func:`split_collective` takes the all-reduce out of a projection so the LoRA wrapper can run it
after adding the delta. Without tensor parallelism the same code is the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from heron.distributed import world
from heron.layers.parallel import ParallelOutput
from heron.lora.request import LoRAError

__all__ = ("ShardLayout", "layout_of", "linear_features", "place_shard", "split_collective")

#: (row range inside the fused projection or None, A [r, in], B_scaled [rows, r]) -- heron.lora.adapter.LoRAShard
_Shard = tuple[tuple[int, int] | None, torch.Tensor, torch.Tensor]


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """How one projection is split over the ranks.

    Attributes:
        spans: column-parallel: per fused part, (first row in the part's full tensor, local rows,
            first local row); None for a row-parallel projection.
        full_sizes: column-parallel: each fused part's full row count.
        in_span: row-parallel: (first input column of the full tensor, local columns); else None.
    """

    spans: tuple[tuple[int, int, int], ...] | None = None
    full_sizes: tuple[int, ...] = ()
    in_span: tuple[int, int] | None = None


def _candidates(module: nn.Module) -> list[nn.Module]:
    """``module`` and the projection it wraps (a LoRA wrapper's base, a kernel's :class:`ParallelOutput` inner)."""
    found = [module]
    for attr in ("base_layer", "inner"):
        inner = module.__dict__.get("_modules", {}).get(attr)
        if inner is not None:
            found.extend(_candidates(inner))
    return found


def layout_of(module: nn.Module) -> ShardLayout | None:
    """The tensor-parallel split of ``module`` (None: a plain, unsplit projection or one that lost it)."""
    for m in _candidates(module):
        spans, in_span = getattr(m, "spans", None), getattr(m, "in_span", None)
        if spans is not None:
            return ShardLayout(spans=tuple(tuple(s) for s in spans), full_sizes=tuple(m.full_sizes))
        if in_span is not None:
            return ShardLayout(in_span=tuple(in_span))
    return None


def linear_features(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of this rank's projection (through wrappers), or None when not linear."""
    for m in _candidates(module):
        if isinstance(m, nn.Embedding):
            return None
        in_features, out_features = getattr(m, "in_features", None), getattr(m, "out_features", None)
        if isinstance(in_features, int) and isinstance(out_features, int):
            return in_features, out_features
    return None


def split_collective(module: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor] | None]:
    """(the projection without its collective, the collective or None) for a LoRA wrapper to run last.

    A kernel's :class:`ParallelOutput` gives up its inner module; a row-parallel layer that kept its
    own ``tp_output`` (the all-reduce) has it taken off, the wrapper running it after the delta.
    """
    if isinstance(module, ParallelOutput):
        return module.inner, module.collective
    collective = getattr(module, "tp_output", None)
    if collective is not None:
        module.tp_output = None  # the instance's own: its forward now returns the partial sum
    return module, collective


def place_shard(module: nn.Module, rows: tuple[int, int] | None, a: torch.Tensor, b: torch.Tensor,
                where: str) -> _Shard:
    """This rank's (rows, A, B) of one PEFT module targeting ``module`` (rows: from ``lora_target``).

    Args:
        module: heron's projection (possibly kernel-converted or LoRA-wrapped).
        rows: the fused part the PEFT module is, as the model's ``lora_target`` gives it (in this
            rank's local layout or in the full one), or None for the whole projection.
        a: [r, full in] lora_A. b: [full rows, r] lora_B (its scaling may be applied before or after).
        where: names the adapter and module in errors.
    Raises:
        LoRAError: the shapes do not fit the projection, or its split cannot be known.
    """
    features = linear_features(module)
    if features is None:
        raise LoRAError(f"{where}: heron's module is a {type(module).__name__}, not a linear layer.")
    layout = layout_of(module)
    if layout is None:
        if world()[1] > 1:  # split or replicated? a kernel's module may have dropped the layer's split
            raise LoRAError(f"{where}: under tensor parallelism LoRA needs to know how the projection is split "
                            f"over the ranks, and its {type(_candidates(module)[-1]).__name__} module does not say "
                            "(a linear kernel that does not keep it?); serve LoRA with --linear-kernel dense.")
        if any(getattr(m, "collective", None) is not None for m in _candidates(module)):  # split, but how?
            raise LoRAError(f"{where}: the linear kernel's module does not say how the layer is split over the "
                            "tensor-parallel ranks; serve LoRA with --linear-kernel dense.")
        return _place_plain(features, rows, a, b, where)
    if layout.in_span is not None:
        return _place_row(layout.in_span, features, rows, a, b, where)
    return _place_column(layout, features, rows, a, b, where)


def _mismatch(where: str, a: torch.Tensor, b: torch.Tensor, in_features: int | str, rows: int) -> LoRAError:
    return LoRAError(f"{where} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}; the model needs "
                     f"[r, {in_features}] and [{rows}, r].")


def _place_plain(features: tuple[int, int], rows: tuple[int, int] | None, a: torch.Tensor, b: torch.Tensor,
                 where: str) -> _Shard:
    in_features, out_features = features
    want = out_features if rows is None else rows[1]
    if a.shape[1] != in_features or b.shape[0] != want:
        raise _mismatch(where, a, b, in_features, want)
    return rows, a, b


def _place_row(in_span: tuple[int, int], features: tuple[int, int], rows: tuple[int, int] | None, a: torch.Tensor,
               b: torch.Tensor, where: str) -> _Shard:
    start, count = in_span
    if rows is not None:
        raise LoRAError(f"{where}: a row-parallel projection has no fused parts, yet the model maps it to rows "
                        f"{rows}.")
    if a.shape[1] < start + count or b.shape[0] != features[1]:
        raise _mismatch(where, a, b, f">={start + count}", features[1])
    return None, a[:, start : start + count].contiguous(), b  # A: this rank's input columns; B whole


def _place_column(layout: ShardLayout, features: tuple[int, int], rows: tuple[int, int] | None, a: torch.Tensor,
                  b: torch.Tensor, where: str) -> _Shard:
    spans, full = layout.spans or (), layout.full_sizes
    offsets = [sum(full[:i]) for i in range(len(full))]  # each part's first row in the full fused tensor
    if rows is None:
        if a.shape[1] != features[0] or b.shape[0] != sum(full):
            raise _mismatch(where, a, b, features[0], sum(full))
        local = [b[off + start : off + start + count] for off, (start, count, _) in zip(offsets, spans, strict=True)]
        return None, a, torch.cat(local).contiguous()  # [local rows, r]
    part = _part_of(rows, spans, full, offsets)
    if part is None:
        raise LoRAError(f"{where}: rows {rows} are not one fused part of the projection (parts: local "
                        f"{[(s[2], s[1]) for s in spans]}, full {list(zip(offsets, full, strict=True))}).")
    start, count, local_start = spans[part]
    if a.shape[1] != features[0] or b.shape[0] != full[part]:
        raise _mismatch(where, a, b, features[0], full[part])
    return (local_start, count), a, b[start : start + count].contiguous()


def _part_of(rows: tuple[int, int], spans: tuple[tuple[int, int, int], ...], full: tuple[int, ...],
             offsets: list[int]) -> int | None:
    """Which fused part ``rows`` names: a part's local rows first, else its rows in the full tensor."""
    rows = tuple(rows)
    for i, (_, count, local_start) in enumerate(spans):
        if rows == (local_start, count):
            return i
    for i, (off, size) in enumerate(zip(offsets, full, strict=True)):
        if rows == (off, size):
            return i
    return None
