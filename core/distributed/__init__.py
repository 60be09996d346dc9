"""Tensor-parallel collectives over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

The tensor-parallel group is the default process group: one engine's ranks form one world
(data-parallel replicas are separate engines, each with its own world). With no group
initialised, or a world of one, every collective is the identity, so single-process code pays
nothing. The rest of the package runs a tensor-parallel engine: :mod:`~heron.distributed.launch`
(layout, rendezvous, ``heron serve --headless``), :mod:`~heron.distributed.spawn` (worker processes),
:mod:`~heron.distributed.protocol` (what rank 0 broadcasts each step), :mod:`~heron.distributed.worker`
(a rank other than 0) and :mod:`~heron.distributed.group` (rank 0's handle on the others); the
engine's side is :mod:`heron.engine.parallel`. They are imported on demand, not from here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ("all_gather", "all_reduce", "is_parallel", "world")


def is_parallel() -> bool:
    """Whether a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(rank, size) of this process in the tensor-parallel group ((0, 1) without one)."""
    if not is_parallel():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the ranks, in place; returns ``x``."""
    if is_parallel():
        dist.all_reduce(x)
    return x


def all_gather(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``x`` along the last dimension; rank ``r`` holds ``sizes[r]`` columns.

    Uneven shards are padded to the widest for the collective and trimmed after.
    """
    if not is_parallel():
        return x
    width = max(sizes)
    if x.shape[-1] < width:
        x = torch.nn.functional.pad(x, (0, width - x.shape[-1]))
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x)
    return torch.cat([p[..., :n] for p, n in zip(parts, sizes, strict=True)], dim=-1)
