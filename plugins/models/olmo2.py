"""OLMo 2 decoders: Llama with q/k RMSNorms over whole projections and norms after each block.

``q_norm``/``k_norm`` normalise the full q (``H * D``) and k (``Hkv * D``) projections, not each
head, before rope. Each block is ``x + norm(block(x))`` (``post_attention_layernorm``,
``post_feedforward_layernorm``): there are no pre-norms.
"""

from __future__ import annotations

from typing import Any

import torch

from heron.interfaces import ForwardBatch, ModelContext
from heron.layers import RMSNorm, RotaryTables
from heron_plugins.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ("Olmo2Attention", "Olmo2DecoderLayer", "Olmo2ForCausalLM")


class Olmo2Attention(LlamaAttention):
    """Llama attention with RMSNorm over the whole q and k projections, before rope."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        self.q_norm = RMSNorm(self.q_size, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.kv_size, config.rms_norm_eps)

    def project_qk(self, qkv: torch.Tensor) -> torch.Tensor:
        """[T, q_size + 2 * kv_size] -> normed q and k heads side by side: [T, H + Hkv, D]."""
        q = self.q_norm(qkv[:, : self.q_size])  # [T, H * D]
        k = self.k_norm(qkv[:, self.q_size : self.q_size + self.kv_size])  # [T, Hkv * D]
        return torch.cat((q, k), dim=-1).view(qkv.shape[0], -1, self.head_size)


class Olmo2DecoderLayer(LlamaDecoderLayer):
    """Attention then gated MLP, each normed on its output before the residual add."""

    attention_cls = Olmo2Attention

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        del self.input_layernorm  # OLMo 2 has no pre-norms
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, rope: RotaryTables, batch: ForwardBatch) -> torch.Tensor:
        hidden = hidden + self.post_attention_layernorm(self.self_attn(hidden, rope, batch))
        return hidden + self.post_feedforward_layernorm(self.mlp(hidden))


class Olmo2ForCausalLM(LlamaForCausalLM):
    """OLMo 2 (``Olmo2ForCausalLM``)."""

    decoder_layer_cls = Olmo2DecoderLayer
