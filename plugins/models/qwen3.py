"""Qwen3 dense decoders: Llama with per-head RMSNorm on queries and keys before rope.

The q/k norms act over ``head_dim`` (one weight shared by all heads of q, another by all heads
of k), there is no q/k/v bias unless ``attention_bias`` says so, ``head_dim`` comes from the
config, and ``layer_types`` may put some layers on a sliding window. :class:`Qwen3DecoderLayer`
keeps Llama's ``build_mlp`` hook so Qwen3-MoE swaps in its experts.
"""

from __future__ import annotations

from typing import Any

import torch

from heron.interfaces import ModelContext
from heron.layers import RMSNorm
from heron_plugins.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ("Qwen3Attention", "Qwen3DecoderLayer", "Qwen3ForCausalLM")


class Qwen3Attention(LlamaAttention):
    """Llama attention plus ``q_norm``/``k_norm`` over each head's channels, applied before rope."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        self.q_norm = RMSNorm(self.head_size, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_size, config.rms_norm_eps)

    def project_qk(self, qkv: torch.Tensor) -> torch.Tensor:
        """[T, q_size + 2 * kv_size] -> normed q and k heads side by side: [T, H + Hkv, D]."""
        qk = super().project_qk(qkv)
        return torch.cat((self.q_norm(qk[:, : self.num_heads]), self.k_norm(qk[:, self.num_heads :])), dim=1)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    """Llama decoder layer with :class:`Qwen3Attention` (subclasses override ``build_mlp``)."""

    attention_cls = Qwen3Attention


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3 dense model (``Qwen3ForCausalLM``), tied embeddings when the config says so."""

    decoder_layer_cls = Qwen3DecoderLayer
    #: q/k norms act per head, so they need nothing under tensor parallelism (each rank norms its heads)
    supports_tensor_parallel = True
