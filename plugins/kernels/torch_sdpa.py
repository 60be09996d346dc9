"""The CPU default attention backend: batched paged attention with plain torch ops.

The cache is head-major, ``[2, num_kv_heads, num_blocks, block_size, head_size]``, so one
``index_select`` over a step's cache slots yields every request's keys as ``[Hkv, R, S, D]``
with each (head, request) history contiguous: the matmuls read it in place, transposed by
stride, with no second copy. ``build_batch`` does the per-step work once: the cache slots of
every request's tokens padded to ``[num_reqs, max_seq]``, the flat index of every request's
queries padded to ``[num_reqs, max_q]``, and where each real query row lands back in the flat
output. Steps made only of decodes skip SDPA for two grouped batched matmuls (faster on CPU for
single-token queries); a prompt computed from scratch attends to its own K/V with a causal SDPA.
Bidirectional (encoder) layers use the same paths without the causal mask: their queries see
every position of their own request.
Layers with a logits soft cap (Gemma 2) compute their scores explicitly in float32, since SDPA
cannot cap them.
No Python loop over requests runs in the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from heron.interfaces import AttentionBackend, AttentionLayerInfo, ForwardBatch
from heron_plugins.kernels.paged import check_dtype, slots_of

__all__ = ("SDPAMetadata", "TorchSDPABackend")

#: decode steps with at most this many requests compute attention in float32
_FP32_DECODE_MAX_REQS = 8


@dataclass(slots=True)
class SDPAMetadata:
    """Per-step indexes shared by every layer."""

    slot_mapping: torch.Tensor  # [T] int64, where the new K/V go
    kv_slots: torch.Tensor  # [R, S] int64 cache slot of each request's key positions (padded)
    flat_slots: torch.Tensor  # [R * S] int64, kv_slots flattened for index_select
    q_index: torch.Tensor  # [R, Q] int64 flat token of each padded query row
    q_pos: torch.Tensor  # [R, Q] int64 sequence position of each padded query row
    out_index: torch.Tensor  # [T] int64 padded row (r * Q + j) of each flat token
    fresh_prefill: bool  # one request, nothing cached before: plain causal attention on k/v
    decode_only: bool  # every request has exactly one new token
    masks: dict[tuple[int | None, bool], torch.Tensor] = field(default_factory=dict)  # -> [R, 1, Q, S]
    biases: dict[int | None, torch.Tensor] = field(default_factory=dict)  # window -> [R, 1, 1, S]

    def mask(self, window: int | None, causal: bool = True) -> torch.Tensor:
        """The boolean attention mask for ``window`` (None = full causal), built on first use.

        Non-causal (encoder) rows allow every real key of their request: positions up to the
        last query's (padding query rows repeat the last query, so ``q_pos[:, -1]`` is
        ``seq_len - 1``).
        """
        found = self.masks.get((window, causal))
        if found is None:
            k_pos = torch.arange(self.kv_slots.shape[1], device=self.q_pos.device)
            limit = self.q_pos if causal else self.q_pos[:, -1:].expand_as(self.q_pos)  # [R, Q]
            allowed = k_pos[None, None, :] <= limit[:, :, None]  # [R, Q, S]
            if window:
                allowed &= k_pos[None, None, :] > self.q_pos[:, :, None] - window
            found = self.masks[(window, causal)] = allowed.unsqueeze(1)
        return found

    def bias(self, window: int | None) -> torch.Tensor:
        """The mask as an additive float32 bias (0 or -inf), ``[R, 1, S]``, for decode-only steps.

        A request's single query is its last position, so the causal bias also serves
        non-causal layers (both allow every position < seq_len).
        """
        found = self.biases.get(window)
        if found is None:
            allowed = self.mask(window)[:, 0]  # [R, 1, S] (one query row per request)
            found = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
            found = self.biases[window] = found.masked_fill_(~allowed, float("-inf"))
        return found


class TorchSDPABackend(AttentionBackend):
    """Batched paged attention with ``torch.nn.functional.scaled_dot_product_attention``."""

    name = "torch_sdpa"
    priority = 100  # the portable fast path

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
        """Head-major: ``[2, num_kv_heads, num_blocks, block_size, head_size]``."""
        return (2, num_kv_heads, num_blocks, block_size, head_size)

    def build_batch(self, batch: ForwardBatch) -> SDPAMetadata:
        device = batch.block_tables.device
        r, q_max, s_max = batch.num_reqs, batch.max_query_len, batch.max_seq_len
        seq = batch.seq_lens_tensor.to(device=device, dtype=torch.int64)  # [R]
        q_lens = torch.tensor(batch.query_lens, dtype=torch.int64, device=device)  # [R]
        starts = batch.query_start_loc.to(device=device, dtype=torch.int64)[:-1]  # [R]
        pos = torch.arange(s_max, device=device)[None, :]  # [1, S]
        # Padding key positions repeat the last real one (masked out anyway).
        kv_slots = slots_of(batch.block_tables, torch.minimum(pos, seq[:, None] - 1), batch.block_size)
        # Padding query rows repeat the request's last query, so no mask row is all False.
        j = torch.minimum(torch.arange(q_max, device=device)[None, :], (q_lens[:, None] - 1).clamp(min=0))
        req_of_token = torch.repeat_interleave(torch.arange(r, device=device), q_lens)  # [T]
        tok = torch.arange(batch.num_tokens, device=device)
        return SDPAMetadata(
            slot_mapping=batch.slot_mapping,
            kv_slots=kv_slots,
            flat_slots=kv_slots.reshape(-1),
            q_index=starts[:, None] + j,
            q_pos=seq[:, None] - q_lens[:, None] + j,
            out_index=req_of_token * q_max + (tok - starts[req_of_token]),
            fresh_prefill=r == 1 and batch.seq_lens[0] == batch.query_lens[0],
            decode_only=q_max == 1,
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: SDPAMetadata,
        layer: AttentionLayerInfo,
    ) -> torch.Tensor:
        md = metadata
        hkv, d = layer.num_kv_heads, layer.head_size
        cache = self.write_kv(kv_cache, k, v, md.slot_mapping)
        gqa = layer.num_heads != layer.num_kv_heads
        causal = getattr(layer, "causal", True)
        if md.fresh_prefill and not layer.sliding_window and not layer.logits_soft_cap:
            # One prompt from scratch: its own k/v are the whole context.
            out = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                is_causal=causal, scale=layer.scale, enable_gqa=gqa,
            )  # [1, H, T, D]
            return out[0].transpose(0, 1)
        r, s_max = md.kv_slots.shape
        keys = cache[0].index_select(1, md.flat_slots).view(hkv, r, s_max, d)  # [Hkv, R, S, D]
        values = cache[1].index_select(1, md.flat_slots).view(hkv, r, s_max, d)
        if md.decode_only:
            return self._decode(q, keys, values, md, layer)
        queries = q[md.q_index].transpose(1, 2)  # [R, H, Q, D]
        keys, values = keys.transpose(0, 1).to(q.dtype), values.transpose(0, 1).to(q.dtype)  # [R, Hkv, S, D]
        mask = md.mask(layer.sliding_window, causal)
        if layer.logits_soft_cap:
            out = self._soft_capped(queries, keys, values, mask, layer)
        else:
            out = F.scaled_dot_product_attention(
                queries, keys, values, attn_mask=mask, scale=layer.scale, enable_gqa=gqa
            )  # [R, H, Q, D]
        r, h, q_max, _ = out.shape
        return out.transpose(1, 2).reshape(r * q_max, h, d)[md.out_index]  # [T, H, D]

    @staticmethod
    def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> torch.Tensor:
        """Store the step's new K/V ([T, Hkv, D]) at their slots; returns the flat ``[2, Hkv, slots, D]`` view."""
        hkv, d = k.shape[1], k.shape[2]
        cache = kv_cache.view(2, hkv, -1, d)
        cache[0].index_copy_(1, slot_mapping, k.transpose(0, 1).to(cache.dtype))
        cache[1].index_copy_(1, slot_mapping, v.transpose(0, 1).to(cache.dtype))
        return cache

    @staticmethod
    def _soft_capped(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                     layer: AttentionLayerInfo) -> torch.Tensor:
        """Attention with ``cap * tanh(scores / cap)`` (SDPA has no soft cap): explicit fp32 scores.

        queries [R, H, Q, D]; keys, values [R, Hkv, S, D]; mask [R, 1, Q, S]. Returns [R, H, Q, D].
        """
        r, h, q_max, d = queries.shape
        hkv = keys.shape[1]
        grouped = queries.reshape(r, hkv, (h // hkv) * q_max, d).float()  # [R, Hkv, G*Q, D]
        scores = torch.matmul(grouped, keys.float().transpose(-1, -2)).mul_(layer.scale)  # [R, Hkv, G*Q, S]
        cap = layer.logits_soft_cap
        scores = torch.tanh(scores.div_(cap)).mul_(cap).view(r, h, q_max, -1)
        probs = torch.softmax(scores.masked_fill_(~mask, float("-inf")), dim=-1)
        out = torch.matmul(probs.view(r, hkv, -1, probs.shape[-1]), values.float())  # [R, Hkv, G*Q, D]
        return out.view(r, h, q_max, d).to(queries.dtype)

    @staticmethod
    def _decode(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, md: SDPAMetadata,
                layer: AttentionLayerInfo) -> torch.Tensor:
        """One query per request: two batched matmuls with the query heads grouped by KV head.

        On CPU this beats SDPA for decode (SDPA's flash kernel is tuned for long query blocks).
        Scores are softmaxed in float32. Small batches run the matmuls in float32: oneDNN's bf16
        batched matmul rebuilds its kernel whenever the context length changes (every step),
        which costs more than converting a few histories; large batches stay in the cache dtype.
        """
        r, hkv, d = q.shape[0], layer.num_kv_heads, layer.head_size
        mm_dtype = torch.float32 if r <= _FP32_DECODE_MAX_REQS else keys.dtype
        grouped = q.view(r, hkv, -1, d).transpose(0, 1).to(mm_dtype)  # [Hkv, R, G, D]; head h uses kv head h // G
        keys, values = keys.to(mm_dtype), values.to(mm_dtype)
        scores = torch.matmul(grouped, keys.transpose(-1, -2)).float()  # [Hkv, R, G, S]
        scores = scores.mul_(layer.scale)
        if layer.logits_soft_cap:
            cap = layer.logits_soft_cap
            scores = torch.tanh(scores.div_(cap)).mul_(cap)
        scores = scores.add_(md.bias(layer.sliding_window))
        probs = torch.softmax(scores, dim=-1).to(mm_dtype)
        out = torch.matmul(probs, values)  # [Hkv, R, G, D]
        return out.transpose(0, 1).reshape(r, layer.num_heads, d).to(q.dtype)  # [T, H, D]
