"""The engine's side of tensor parallelism: checks, start-up, and what every rank must agree on.

:func:`start_tensor_parallel` runs on rank 0 before the model is loaded: it refuses what cannot
split (a model class whose ``supports_tensor_parallel`` is not true), spawns this
machine's workers, joins the group and sends the settings every rank must share
(:func:`share_setup` / :func:`receive_setup`). Then every rank loads its shard the same way and
checks with the others that they chose the same attention backend and linear kernel
(:func:`agree_on_model`); the KV pool gets the number of blocks every rank can hold
(:func:`min_over_ranks`). The running group is a :class:`heron.distributed.group.RankGroup`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.distributed as dist

__all__ = ("agree_on_model", "check_tensor_parallel", "min_over_ranks", "receive_setup", "share_setup",
           "start_tensor_parallel")

log = logging.getLogger("heron.engine")

#: engine settings rank 0 imposes on every rank (a headless node's own flags may differ)
_SHARED_FIELDS = ("block_size", "model_impl", "attention_backend", "linear_kernel", "quantization",
                  "max_model_len", "num_kv_blocks", "enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras",
                  "runner", "convert", "seed")


def check_tensor_parallel(checkpoint: Any, config: Any) -> None:
    """Raise ValueError when ``config.tensor_parallel_size`` > 1 cannot serve ``checkpoint``.

    The model class is looked up (not built) the way the loader will pick it, the transformers
    fallback included, so the refusal comes before any worker starts.
    """
    if config.tensor_parallel_size <= 1:
        return
    from heron.loader.build import choose_model_impl
    from heron.plugins import registry

    name, _ = choose_model_impl(checkpoint.hf_config, config.model_impl, checkpoint.path)
    cls = registry("models").load(name)
    if not getattr(cls, "supports_tensor_parallel", False):
        raise ValueError(f"{cls.__module__}.{cls.__qualname__} (serving {name}) does not support tensor "
                         f"parallelism: run it with --tensor-parallel-size 1, or use a model plugin that sets "
                         "supports_tensor_parallel = True.")


def start_tensor_parallel(config: Any, checkpoint: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """Rank 0: check, spawn this machine's workers, join the group, share the settings.

    Returns the :class:`~heron.distributed.group.RankGroup`, or None at ``tensor_parallel_size`` 1.
    Under torchrun, a process of rank > 0 runs as a worker here and exits when rank 0 stops.
    """
    if config.tensor_parallel_size <= 1:
        return None
    from heron.distributed.group import RankGroup
    from heron.distributed.launch import device_for, layout_of

    check_tensor_parallel(checkpoint, config)
    layout = layout_of(config)
    if layout.torchrun and layout.rank != 0:
        from heron.distributed.spawn import run_node

        raise SystemExit(run_node(config))
    if layout.node_rank != 0:
        raise ValueError(f"--node-rank {layout.node_rank} runs workers only: start it with --headless.")
    group = RankGroup.start(config, layout, device_for(device, 0))
    try:
        share_setup(config, dtype, group.cpu_group)
    except BaseException:
        group.shutdown(kill=True)
        raise
    return group


def share_setup(config: Any, dtype: torch.dtype, group: Any) -> None:
    """Rank 0: send the settings every rank must share (and the resolved dtype)."""
    fields = {name: getattr(config, name) for name in _SHARED_FIELDS}
    fields["dtype"] = str(dtype).removeprefix("torch.")
    dist.broadcast_object_list([fields], 0, group=group)


def receive_setup(config: Any, group: Any) -> tuple[Any, torch.dtype]:
    """Other ranks: rank 0's shared settings applied to this rank's ``config``; (config, dtype)."""
    from heron.loader import resolve_dtype

    box: list[Any] = [None]
    dist.broadcast_object_list(box, 0, group=group)
    fields = dict(box[0])
    dtype = resolve_dtype(fields.pop("dtype"))
    return dataclasses.replace(config, **fields, dtype=str(dtype).removeprefix("torch.")), dtype


def agree_on_model(loaded: Any, group: Any) -> None:
    """Every rank: check that all ranks chose the same attention backend and linear kernel."""
    mine = (loaded.backend.name, loaded.linear_kernel)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine, group=group)
    if any(other != everyone[0] for other in everyone):
        described = ", ".join(f"rank {r}: {b}/{k}" for r, (b, k) in enumerate(everyone))
        raise RuntimeError(f"tensor-parallel ranks chose different attention backends / linear kernels ({described}); "
                           "pass --attention-backend and --linear-kernel explicitly.")


def min_over_ranks(value: int, group: Any) -> int:
    """The smallest ``value`` over the ranks (the KV blocks every rank can hold)."""
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)
    return int(t.item())
