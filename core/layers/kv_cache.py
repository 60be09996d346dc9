"""Allocate each attention layer's paged KV cache in the backend's layout and bind it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heron.interfaces import AttentionBackend
from heron.layers.attention import Attention

__all__ = ("allocate_kv_caches", "attention_layers", "attention_needs", "bind_attention_backend")

# glibc serves allocations above its largest mmap threshold (32 MiB) with fresh, zeroed mmap pages
_LAZY_BYTES = (32 << 20) + 1


def attention_layers(model: nn.Module) -> list[Attention]:
    """The model's :class:`Attention` layers, ordered by ``layer_idx``."""
    layers = sorted((m for m in model.modules() if isinstance(m, Attention)), key=lambda m: m.layer_idx)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no heron.layers.Attention layer to bind a KV cache to.")
    return layers


def attention_needs(model: nn.Module) -> dict[str, Any]:
    """What the model's attention layers ask of a backend, as ``supports`` keyword arguments.

    ``head_size`` is the largest head size (``head_sizes`` lists them all when layers differ);
    ``sliding_window`` the smallest window any layer uses (None: no layer slides);
    ``logits_soft_cap`` set when any layer soft-caps its scores;
    ``non_causal`` set (True) when any layer attends bidirectionally (an encoder).
    """
    layers = attention_layers(model)
    head_sizes = sorted({layer.head_size for layer in layers})
    windows = [layer.sliding_window for layer in layers if layer.sliding_window]
    caps = [layer.logits_soft_cap for layer in layers if layer.logits_soft_cap]
    needs: dict[str, Any] = {"head_size": head_sizes[-1], "sliding_window": min(windows) if windows else None}
    if caps:
        needs["logits_soft_cap"] = caps[0]
    if any(not layer.causal for layer in layers):
        needs["non_causal"] = True
    if len(head_sizes) > 1:
        needs["head_sizes"] = tuple(head_sizes)
    return needs


def bind_attention_backend(model: nn.Module, backend: AttentionBackend) -> None:
    """Make every attention layer of ``model`` compute with ``backend`` (one instance per engine)."""
    for layer in attention_layers(model):
        layer.backend = backend


def allocate_kv_caches(
    model: nn.Module,
    backend_cls: type[AttentionBackend],
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> list[torch.Tensor]:
    """Allocate a zeroed cache per attention layer (views of one pool) and bind it to ``layer.kv_cache``.

    Args:
        model: a model built from :mod:`heron.layers`.
        backend_cls: the backend whose ``kv_cache_shape`` gives the layout.
        num_blocks: blocks per layer (all layers share the block ids).
        block_size: tokens per block.
        dtype, device: where the caches live.
    Returns:
        the caches, in layer order.
    """
    layers = attention_layers(model)
    shapes = [
        torch.Size(backend_cls.kv_cache_shape(num_blocks, block_size, layer.num_kv_heads, layer.head_size))
        for layer in layers
    ]
    # One allocation for every layer: above glibc's largest mmap threshold (32 MiB) it is fresh,
    # already-zero anonymous memory that the OS backs only as K/V get written, so resident
    # memory grows with use rather than with the pool size. Small pools are zeroed explicitly.
    pool = torch.empty(sum(shape.numel() for shape in shapes), dtype=dtype, device=device)
    if pool.device.type != "cpu" or pool.nbytes < _LAZY_BYTES:
        pool.zero_()
    caches, offset = [], 0
    for layer, shape in zip(layers, shapes, strict=True):
        layer.kv_cache = pool[offset : offset + shape.numel()].view(shape)
        offset += shape.numel()
        caches.append(layer.kv_cache)
    return caches
