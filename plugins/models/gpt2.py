"""GPT-2 (``GPT2LMHeadModel``): learned positions, LayerNorm with bias, fused ``c_attn``, GeLU MLP.

Module names mirror the HF checkpoint (``transformer.h.N.attn.c_attn`` ...) so loading is a
one-to-one copy, except that HF stores its ``Conv1D`` weights as ``[in, out]``: they are
transposed into ``nn.Linear`` ``[out, in]`` weights. Multi-head attention (no KV-head sharing).
Options that change the math and that heron does not implement are refused when the model is built.

Tensor parallel: ``c_attn``'s q/k/v parts split by heads, the attention ``c_proj`` and the MLP
``c_proj`` are row parallel (one all-reduce each) after the column-parallel ``c_fc``; ``wte`` is
vocabulary-parallel and the tied LM head gathers the logits; ``wpe`` and the LayerNorms are replicated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import CausalLM, ForwardBatch, ModelContext
from heron.layers import (
    Attention,
    ColumnParallelLinear,
    LayerNorm,
    ParallelLMHead,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    get_act_fn,
    load_parameter,
    tp_of,
)

__all__ = ("GPT2LMHeadModel",)

# config flag -> why heron refuses it when set
_UNSUPPORTED = {
    "reorder_and_upcast_attn": "it computes attention scores in a different order and precision",
    "add_cross_attention": "heron serves decoder-only GPT-2 without cross-attention",
}
_CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")


class GPT2Attention(nn.Module):
    """Fused q/k/v projection (``c_attn``), paged attention, output projection (``c_proj``)."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        width, heads = config.n_embd, config.n_head
        self.head_size = width // heads
        scale = self.head_size**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= float(layer_idx + 1)
        self.c_attn = QKVParallelLinear(width, self.head_size, heads, heads, bias=True, rank=rank, size=size)
        self.width = self.c_attn.q_size  # this rank's heads * head_size (all of them at tp 1)
        local = self.c_attn.heads
        self.c_proj = RowParallelLinear(width, width, rank=rank, size=size,
                                        local_in=(local.q_start * self.head_size, self.width))
        self.attn = Attention(local.num_heads, local.num_heads, self.head_size, scale, layer_idx,
                              ctx.attention_backend)

    def forward(self, hidden: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """[T, width] -> [T, width]."""
        q, k, v = self.c_attn(hidden).split(self.width, dim=-1)  # each [T, local width]
        return self.c_proj(self.attn(q, k, v, batch))


class GPT2MLP(nn.Module):
    """``c_proj(act(c_fc(x)))``."""

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = ColumnParallelLinear(config.n_embd, inner, rank=rank, size=size)
        self.c_proj = RowParallelLinear(inner, config.n_embd, rank=rank, size=size)
        self.act = get_act_fn(config.activation_function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[T, width] -> [T, width]."""
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    """Pre-LayerNorm attention and MLP blocks, each with a residual."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int) -> None:
        super().__init__()
        eps = config.layer_norm_epsilon
        self.ln_1 = LayerNorm(config.n_embd, eps)
        self.attn = GPT2Attention(config, ctx, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, eps)
        self.mlp = GPT2MLP(config, ctx)

    def forward(self, hidden: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        hidden = hidden + self.attn(self.ln_1(hidden), batch)
        return hidden + self.mlp(self.ln_2(hidden))


class GPT2Model(nn.Module):
    """Token + learned position embeddings, blocks, final LayerNorm."""

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        self.wte = VocabParallelEmbedding(config.vocab_size, config.n_embd, rank=rank, size=size)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(GPT2Block(config, ctx, i) for i in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        hidden = self.wte(input_ids) + self.wpe(positions)  # [T, width]
        for block in self.h:
            hidden = block(hidden, batch)
        return self.ln_f(hidden)


class GPT2LMHeadModel(nn.Module, CausalLM):
    """GPT-2 with its LM head (tied to ``wte`` unless ``tie_word_embeddings`` is false)."""

    supports_tensor_parallel = True

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        for flag, why in _UNSUPPORTED.items():
            if getattr(config, flag, False):
                raise ValueError(f"GPT-2 config sets {flag}=True, which heron does not implement ({why}).")
        self.config = config
        self.transformer = GPT2Model(config, ctx)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", True))
        rank, size = tp_of(ctx)
        self.lm_head = ParallelLMHead(config.n_embd, config.vocab_size, rank=rank, size=size)
        if self.tie_word_embeddings:
            self.lm_head.tie(self.transformer.wte)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        return self.transformer(input_ids, positions, batch)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, width] -> [n, vocab] float32 (gathered over the ranks)."""
        return self.lm_head(hidden_states).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors (with or without the ``transformer.`` prefix); every parameter must be set."""
        params = dict(self.named_parameters())  # the tied lm_head appears once, as transformer.wte
        missing = set(params)
        for name, tensor in weights:
            if name.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # causal-mask buffers of old checkpoints
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            if not name.startswith(("transformer.", "lm_head.")):
                name = f"transformer.{name}"
            param = params.get(name)
            if param is None:
                raise KeyError(f"Checkpoint tensor {name!r} has no matching parameter in {type(self).__name__}.")
            if name.endswith(_CONV1D):
                tensor = tensor.t()  # Conv1D [in, out] -> Linear [out, in]
            load_parameter(self, name, param, tensor)  # this rank's slice (c_attn: q, k and v by heads)
            missing.discard(name)
        if missing:
            raise ValueError(f"The checkpoint lacks tensors for: {', '.join(sorted(missing))}.")
