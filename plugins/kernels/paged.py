"""Paged KV-cache helpers shared by the built-in CPU backends.

Layout of one layer's cache: ``[2, num_blocks, block_size, num_kv_heads, head_size]`` (keys
then values); token ``s`` of a request lives in slot ``block_table[s // block_size] *
block_size + s % block_size``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ("check_dtype", "kv_cache_shape", "slots_of", "write_kv")


def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_size: int) -> tuple[int, ...]:
    """The shared paged layout: keys and values stacked on the first axis."""
    return (2, num_blocks, block_size, num_kv_heads, head_size)


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store the step's new keys/values ([T, Hkv, D]) at their slots ([T] int64)."""
    _, _, _, hkv, d = kv_cache.shape
    flat = kv_cache.view(2, -1, hkv, d)  # [2, num_slots, Hkv, D]
    flat[0].index_copy_(0, slot_mapping, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, v.to(kv_cache.dtype))


def slots_of(block_table: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cache slots of sequence ``positions`` ([..., S]) given a block table ([..., max_blocks])."""
    blocks = block_table.long().gather(-1, torch.div(positions, block_size, rounding_mode="floor"))
    return blocks * block_size + positions % block_size


#: ``supports`` features every built-in backend handles (``head_sizes``: layers of several head sizes;
#: ``non_causal``: bidirectional encoder layers attending to all of their request's positions)
_KNOWN_FEATURES = frozenset({"logits_soft_cap", "head_sizes", "non_causal"})


def check_dtype(name: str, dtype: torch.dtype, features: dict[str, Any]) -> str | None:
    """Common ``supports`` checks of the built-in backends: float dtypes, no unknown features."""
    if not dtype.is_floating_point:
        return f"{name} computes attention in floating point, not {dtype}"
    unknown = sorted(k for k, v in features.items() if v and k not in _KNOWN_FEATURES)
    if unknown:
        return f"{name} does not implement {', '.join(unknown)}"
    return None
