"""The reference attention backend: plain, obviously-correct, one request at a time.

It writes the step's K/V into the paged cache, then for each request gathers its tokens
through the block table and computes softmax attention explicitly in float32 (causal mask, or
none for bidirectional encoder layers; optional sliding window and logits soft cap). Slow; use it to check faster backends.
"""

from __future__ import annotations

from typing import Any

import torch

from heron.interfaces import AttentionBackend, AttentionLayerInfo, ForwardBatch
from heron_plugins.kernels.paged import check_dtype, kv_cache_shape, slots_of, write_kv

__all__ = ("EagerBackend",)


class EagerBackend(AttentionBackend):
    """Per-request explicit attention over the paged cache; any device, any float dtype."""

    name = "eager"
    priority = 0  # the reference: auto's last resort (any device, any float dtype, soft caps)

    @classmethod
    def supports(
        cls,
        device: torch.device,
        dtype: torch.dtype,
        head_size: int,
        sliding_window: int | None = None,
        **features: Any,
    ) -> str | None:
        return check_dtype(cls.name, dtype, features)

    @classmethod
    def kv_cache_shape(cls, num_blocks: int, block_size: int, num_kv_heads: int, head_size: int) -> tuple[int, ...]:
        return kv_cache_shape(num_blocks, block_size, num_kv_heads, head_size)

    def build_batch(self, batch: ForwardBatch) -> ForwardBatch:
        # The reference reads everything it needs straight off the batch.
        return batch

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: ForwardBatch,
        layer: AttentionLayerInfo,
    ) -> torch.Tensor:
        batch = metadata
        write_kv(kv_cache, k, v, batch.slot_mapping)
        hkv, d = layer.num_kv_heads, layer.head_size
        keys_all = kv_cache[0].reshape(-1, hkv, d)  # [num_slots, Hkv, D]
        values_all = kv_cache[1].reshape(-1, hkv, d)
        group = layer.num_heads // hkv
        out = torch.empty_like(q)  # [T, H, D]
        start = 0
        for i in range(batch.num_reqs):
            q_len, seq_len = batch.query_lens[i], batch.seq_lens[i]
            k_pos = torch.arange(seq_len, device=q.device)
            slots = slots_of(batch.block_tables[i], k_pos, batch.block_size)  # [S]
            keys = keys_all[slots].float().repeat_interleave(group, dim=1)  # [S, H, D]
            values = values_all[slots].float().repeat_interleave(group, dim=1)
            qi = q[start : start + q_len].float()  # [Q, H, D]
            scores = torch.einsum("qhd,khd->hqk", qi, keys) * layer.scale  # [H, Q, S]
            if layer.logits_soft_cap:
                scores = layer.logits_soft_cap * torch.tanh(scores / layer.logits_soft_cap)
            if getattr(layer, "causal", True):  # non-causal: every position < seq_len, no mask
                q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
                allowed = k_pos[None, :] <= q_pos[:, None]  # [Q, S] causal
                if layer.sliding_window:
                    allowed &= k_pos[None, :] > q_pos[:, None] - layer.sliding_window
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            out[start : start + q_len] = torch.einsum("hqk,khd->qhd", probs, values).to(q.dtype)
            start += q_len
        return out
