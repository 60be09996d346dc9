"""Mixtral: Mistral's decoder with a top-k mixture of experts in place of the MLP.

Only the feed-forward block differs from :mod:`heron_plugins.models.llama`: every layer routes each
token to ``num_experts_per_tok`` of ``num_local_experts`` experts, always renormalising their
weights. Checkpoints name the block ``block_sparse_moe`` (the Hub's per-expert ``w1``/``w2``/``w3``
layout) or ``mlp`` (transformers 5.x's stacked ``experts.gate_up_proj``/``down_proj``); both load.
Tensor parallel: attention splits as Llama's; the router is replicated and every expert's
intermediate width splits, with one all-reduce per block after the routing weights combine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import ModelContext
from heron.layers import MixtureOfExperts, load_expert_weights, tp_of
from heron_plugins.models.llama import LlamaDecoderLayer, LlamaForCausalLM

__all__ = ("MixtralForCausalLM",)


class MixtralDecoderLayer(LlamaDecoderLayer):
    """Llama decoder layer whose feed-forward block is a mixture of experts."""

    def build_mlp(self, config: Any, ctx: ModelContext, layer_idx: int) -> nn.Module:
        rank, size = tp_of(ctx)
        return MixtureOfExperts(
            config.hidden_size,
            config.num_local_experts,
            config.num_experts_per_tok,
            config.intermediate_size,
            renormalize=True,
            activation=config.hidden_act,
            rank=rank,
            size=size,
        )


class MixtralForCausalLM(LlamaForCausalLM):
    """Mixtral decoder with an LM head."""

    decoder_layer_cls = MixtralDecoderLayer
    supports_tensor_parallel = True

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors; per-expert and stacked expert layouts are both accepted."""
        renamed = ((name.replace(".block_sparse_moe.", ".mlp."), tensor) for name, tensor in weights)
        super().load_weights(load_expert_weights(self, renamed))
