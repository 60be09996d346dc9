"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's decoder with routed experts plus a shared expert.

A layer is sparse unless ``mlp_only_layers`` lists it or ``decoder_sparse_step`` skips it; those
keep a dense gated MLP of ``intermediate_size``. Sparse layers route each token to
``num_experts_per_tok`` experts (renormalised when ``norm_topk_prob``) and add a shared expert
scaled by ``sigmoid(shared_expert_gate(x))``. Tensor parallel: routed experts, the shared expert
and dense MLPs split their intermediate width; the router and ``shared_expert_gate`` are
replicated; a sparse block sums its routed and shared partial outputs before its one all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import ModelContext
from heron.layers import GatedMLP, MixtureOfExperts, load_expert_weights, tp_of
from heron_plugins.models.llama import LlamaDecoderLayer, LlamaForCausalLM

__all__ = ("Qwen2MoeForCausalLM", "is_sparse_layer", "qwen_moe_mlp")


def is_sparse_layer(config: Any, layer_idx: int) -> bool:
    """Whether layer ``layer_idx`` routes to experts (transformers' rule for the Qwen MoE family)."""
    if layer_idx in (getattr(config, "mlp_only_layers", None) or ()):
        return False
    return config.num_experts > 0 and (layer_idx + 1) % config.decoder_sparse_step == 0


def qwen_moe_mlp(config: Any, ctx: ModelContext, layer_idx: int) -> nn.Module:
    """The feed-forward block of a Qwen2-MoE / Qwen3-MoE layer: experts, or a dense MLP (split over ``ctx``'s ranks)."""
    rank, size = tp_of(ctx)
    if not is_sparse_layer(config, layer_idx):
        return GatedMLP(config.hidden_size, config.intermediate_size, activation=config.hidden_act,
                        rank=rank, size=size)
    return MixtureOfExperts(
        config.hidden_size,
        config.num_experts,
        config.num_experts_per_tok,
        config.moe_intermediate_size,
        renormalize=bool(config.norm_topk_prob),
        activation=config.hidden_act,
        shared_expert_intermediate_size=getattr(config, "shared_expert_intermediate_size", 0) or 0,
        rank=rank,
        size=size,
    )


class Qwen2MoeDecoderLayer(LlamaDecoderLayer):
    """Qwen2 decoder layer with a Qwen MoE feed-forward block."""

    def build_mlp(self, config: Any, ctx: ModelContext, layer_idx: int) -> nn.Module:
        return qwen_moe_mlp(config, ctx, layer_idx)


class Qwen2MoeForCausalLM(LlamaForCausalLM):
    """Qwen2-MoE decoder with an LM head; q/k/v carry biases as in Qwen2."""

    qkv_bias = True
    decoder_layer_cls = Qwen2MoeDecoderLayer
    supports_tensor_parallel = True

    def _shard_rows(self, param_name: str, index: int) -> tuple[int, int]:
        if ".shared_expert." in param_name:  # the shared expert's fused gate/up has its own width: its rank's rows
            _, count, local = self.get_submodule(param_name.rpartition(".")[0]).spans[index]
            return local, count
        return super()._shard_rows(param_name, index)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load HF-named tensors; per-expert and stacked expert layouts are both accepted."""
        super().load_weights(load_expert_weights(self, weights))
