"""IBM Granite (3.x) decoders: Llama with four scalar multipliers from the config.

``embedding_multiplier`` scales the input embeddings, ``residual_multiplier`` scales each block's
output before the residual add, ``attention_multiplier`` replaces ``head_dim ** -0.5`` as the
softmax scale, and the logits are divided by ``logits_scaling``.
"""

from __future__ import annotations

from typing import Any

import torch

from heron.interfaces import ForwardBatch, ModelContext
from heron.layers import RotaryTables
from heron_plugins.models.llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
)

__all__ = ("GraniteAttention", "GraniteDecoderLayer", "GraniteForCausalLM", "GraniteModel")


class GraniteAttention(LlamaAttention):
    """Llama attention whose softmax scale is the config's ``attention_multiplier``."""

    def softmax_scale(self, config: Any) -> float:
        return float(config.attention_multiplier)


class GraniteDecoderLayer(LlamaDecoderLayer):
    """Llama decoder layer whose block outputs are scaled by ``residual_multiplier``."""

    attention_cls = GraniteAttention

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        self.residual_multiplier = float(config.residual_multiplier)

    def forward(self, hidden: torch.Tensor, rope: RotaryTables, batch: ForwardBatch) -> torch.Tensor:
        m = self.residual_multiplier
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope, batch) * m
        return hidden + self.mlp(self.post_attention_layernorm(hidden)) * m


class GraniteModel(LlamaModel):
    """Llama decoder stack with embeddings scaled by ``embedding_multiplier``."""

    def __init__(
        self, config: Any, ctx: ModelContext, qkv_bias: bool, layer_cls: type[LlamaDecoderLayer] = GraniteDecoderLayer
    ) -> None:
        super().__init__(config, ctx, qkv_bias, layer_cls)
        self.embedding_multiplier = float(config.embedding_multiplier)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids) * self.embedding_multiplier


class GraniteForCausalLM(LlamaForCausalLM):
    """Granite (``GraniteForCausalLM``): logits divided by ``logits_scaling``."""

    decoder_layer_cls = GraniteDecoderLayer
    model_cls = GraniteModel
    #: the multipliers are scalars: every rank applies them to its shard (or to the gathered logits)
    supports_tensor_parallel = True

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, hidden] -> [n, vocab] float32."""
        return self.lm_head(hidden_states).float() / float(self.config.logits_scaling)
