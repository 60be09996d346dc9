"""The attention layer every model plugin uses: it owns no math, it hands the work to the backend.

The engine finds these layers by iterating ``model.modules()`` and binds each one's paged KV
cache to ``kv_cache`` (see :func:`heron.layers.allocate_kv_caches`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from heron.interfaces import AttentionBackend, ForwardBatch

__all__ = ("Attention",)


class Attention(nn.Module):
    """Paged attention over a flat batch, computed by the chosen :class:`AttentionBackend`.

    Its attributes are those of :class:`heron.interfaces.AttentionLayerInfo`.

    Args:
        num_heads: query heads.
        num_kv_heads: key/value heads (fewer than ``num_heads`` for GQA).
        head_size: channels per head.
        scale: softmax scale, usually ``head_size ** -0.5``.
        layer_idx: position of this layer in the model; orders the KV caches.
        backend: the backend instance that computes attention; None when the engine picks the
            backend after the model is built (from what its layers need) and binds it with
            :func:`heron.layers.bind_attention_backend`.
        sliding_window: attend only to the last ``sliding_window`` tokens (itself included).
        logits_soft_cap: ``cap * tanh(scores / cap)`` before the softmax.
        causal: False for a bidirectional (encoder) layer: every new token attends to all of its
            request's positions. Encoders get a request's whole prompt in one step, so this is
            full attention over the prompt.
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_size: int,
        scale: float,
        layer_idx: int,
        backend: AttentionBackend | None = None,
        sliding_window: int | None = None,
        logits_soft_cap: float | None = None,
        causal: bool = True,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads}).")
        if not causal and sliding_window:
            raise ValueError("A sliding window needs causal attention; heron has no bidirectional windowed attention.")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_size = head_size
        self.scale = scale
        self.layer_idx = layer_idx
        self.backend = backend
        self.sliding_window = sliding_window
        self.logits_soft_cap = logits_soft_cap
        self.causal = causal
        self.kv_cache: torch.Tensor | None = None  # bound by the engine

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """Write K/V into this layer's cache and attend.

        Args:
            q: [T, num_heads * head_size] or [T, num_heads, head_size].
            k, v: [T, num_kv_heads * head_size] or [T, num_kv_heads, head_size].
            batch: the step's batch with ``attn_metadata`` from the backend's ``build_batch``.
        Returns:
            [T, num_heads * head_size]
        """
        if self.backend is None:
            raise RuntimeError(
                f"Attention layer {self.layer_idx} has no backend bound; call heron.layers.bind_attention_backend first."
            )
        if self.kv_cache is None:
            raise RuntimeError(
                f"Attention layer {self.layer_idx} has no KV cache bound; call heron.layers.allocate_kv_caches first."
            )
        t = q.shape[0]
        q = q.view(t, self.num_heads, self.head_size)
        k = k.view(t, self.num_kv_heads, self.head_size)
        v = v.view(t, self.num_kv_heads, self.head_size)
        out = self.backend.forward(q, k, v, self.kv_cache, batch.attn_metadata, self)
        return out.reshape(t, self.num_heads * self.head_size)

    def extra_repr(self) -> str:
        return (
            f"layer_idx={self.layer_idx}, heads={self.num_heads}, kv_heads={self.num_kv_heads}, "
            f"head_size={self.head_size}, sliding_window={self.sliding_window}, causal={self.causal}, "
            f"backend={getattr(self.backend, 'name', type(self.backend).__name__)}"
        )
