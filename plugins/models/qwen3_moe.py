"""Qwen3-MoE: Qwen3's attention (per-head q/k RMSNorm) with Qwen's mixture-of-experts feed-forward.

No shared expert; routing weights are renormalised when ``norm_topk_prob``; ``mlp_only_layers`` and
``decoder_sparse_step`` keep some layers dense, as in :mod:`heron_plugins.models.qwen2_moe`, which
also describes how the experts split under tensor parallelism.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import ModelContext
from heron.layers import load_expert_weights
from heron_plugins.models.qwen2_moe import qwen_moe_mlp
from heron_plugins.models.qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM

__all__ = ("Qwen3MoeForCausalLM",)


class Qwen3MoeDecoderLayer(Qwen3DecoderLayer):
    """Qwen3 decoder layer with a Qwen MoE feed-forward block."""

    def build_mlp(self, config: Any, ctx: ModelContext, layer_idx: int) -> nn.Module:
        return qwen_moe_mlp(config, ctx, layer_idx)


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    """Qwen3-MoE decoder with an LM head."""

    decoder_layer_cls = Qwen3MoeDecoderLayer
    supports_tensor_parallel = True

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors; per-expert and stacked expert layouts are both accepted."""
        super().load_weights(load_expert_weights(self, weights))
