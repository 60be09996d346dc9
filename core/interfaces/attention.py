"""The attention-backend contract and the per-step batch description it is handed."""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

__all__ = ("AttentionBackend", "AttentionLayerInfo", "ForwardBatch", "current_batch", "running_batch")


@dataclass(slots=True)
class ForwardBatch:
    """One engine step: the new tokens of ``num_reqs`` requests laid out flat, request by request.

    A request contributes ``query_lens[i]`` new tokens (a prefill chunk, or 1 for a decode) and
    attends over ``seq_lens[i]`` tokens (those already cached plus the new ones).
    """

    num_reqs: int
    num_tokens: int
    block_size: int
    query_lens: list[int]
    seq_lens: list[int]
    query_start_loc: torch.Tensor  # [num_reqs + 1] int32, cumulative query_lens
    seq_lens_tensor: torch.Tensor  # [num_reqs] int32
    block_tables: torch.Tensor  # [num_reqs, max_blocks] int32, padded with 0
    slot_mapping: torch.Tensor  # [num_tokens] int64, block_id * block_size + offset per new token
    logits_indices: torch.Tensor  # [num_reqs] int64, flat index of each request's last new token
    attn_metadata: Any = None  # what the backend's build_batch returned for this step
    #: how many of the new tokens are prompt tokens (a prefill, a prefill chunk, the rest of a prompt
    #: after a prefix-cache hit); the others are generated or draft tokens
    num_prompt_tokens: int = 0

    @property
    def max_query_len(self) -> int:
        return max(self.query_lens, default=0)

    @property
    def max_seq_len(self) -> int:
        return max(self.seq_lens, default=0)


_current: contextvars.ContextVar[ForwardBatch | None] = contextvars.ContextVar("heron_forward_batch", default=None)


def current_batch() -> ForwardBatch | None:
    """The step whose forward (and LM head) is running on this thread, or None outside one.

    For layers that choose how to compute by the step's shape, e.g. a linear kernel that runs a
    prompt's tokens one way whatever their count (so a prompt gives the same numbers cold and after a
    prefix-cache hit) and a few generated tokens another.
    """
    return _current.get()


@contextmanager
def running_batch(batch: ForwardBatch) -> Iterator[ForwardBatch]:
    """Make ``batch`` the :func:`current_batch` inside the block (the model runner's forward)."""
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)


class AttentionLayerInfo:
    """Attributes a backend may read off the calling layer (see :class:`heron.layers.Attention`)."""

    layer_idx: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    scale: float
    sliding_window: int | None
    logits_soft_cap: float | None
    #: False for bidirectional (encoder) layers: each new token attends to every position of its
    #: own request (all positions < ``seq_lens[i]``), not only to those before it. Backends read
    #: it with ``getattr(layer, "causal", True)`` so layers that predate it stay causal.
    causal: bool


class AttentionBackend(ABC):
    """Owns the paged KV-cache layout and computes attention for a whole step in one call."""

    #: the ``--attention-backend`` name
    name: ClassVar[str]
    #: how eagerly ``--attention-backend auto`` tries this backend: higher first, equal ones in
    #: name order; ``None`` = never chosen by ``auto``, only when named. The built-in backends
    #: use 0 for the reference implementation and 100-200 for the fast ones.
    priority: ClassVar[int | None] = None

    @classmethod
    @abstractmethod
    def supports(
        cls,
        device: torch.device,
        dtype: torch.dtype,
        head_size: int,
        sliding_window: int | None = None,
        **features: Any,
    ) -> str | None:
        """None when this backend can serve the model on ``device``/``dtype``, else why not."""

    @classmethod
    @abstractmethod
    def kv_cache_shape(
        cls, num_blocks: int, block_size: int, num_kv_heads: int, head_size: int
    ) -> tuple[int, ...]:
        """Shape of one layer's KV-cache tensor (keys and values together)."""

    @abstractmethod
    def build_batch(self, batch: ForwardBatch) -> Any:
        """Precompute, once per step, whatever every layer's ``forward`` needs (masks, indexes)."""

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: Any,
        layer: AttentionLayerInfo,
    ) -> torch.Tensor:
        """Write the new K/V into their slots and attend over each request's cached blocks.

        Args:
            q: [num_tokens, num_heads, head_size]
            k, v: [num_tokens, num_kv_heads, head_size]
            kv_cache: this layer's cache, shaped as :meth:`kv_cache_shape` says.
            metadata: this step's :meth:`build_batch` result.
            layer: the calling layer (heads, scale, sliding window, soft cap, causal).
        Returns:
            [num_tokens, num_heads, head_size]
        """
