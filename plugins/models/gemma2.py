"""Gemma 2 decoder built from :mod:`heron.layers`; Gemma 3 (``gemma3.py``) reuses its pieces.

Gemma differs from Llama in ways read off the HF config: embeddings scaled by ``sqrt(hidden)``
(in the model dtype), ``(1 + w)`` RMSNorms around both the attention and the MLP (four per
layer), a GeGLU MLP, a softmax scale of ``query_pre_attn_scalar ** -0.5``, attention and final
logit soft caps, and a sliding window on the layers ``layer_types`` marks ``sliding_attention``
(transformers and heron both attend to the last ``sliding_window`` tokens, the query included).
q/k/v and gate/up are fused into single matmuls; ``load_weights`` slices the HF tensors into them.

Tensor parallel (``ctx.tp_size`` ranks): heads split by key/value groups (``qkv_proj``), ``o_proj``
and the MLP's ``down_proj`` are row parallel (one all-reduce each), the embedding is
vocabulary-parallel (scaled after its all-reduce) and the LM head gathers the full logits before
the final soft cap. Checkpoint tensors are full size; each layer's ``weight_loader`` takes its slice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from heron.interfaces import CausalLM, ForwardBatch, ModelContext
from heron.layers import (
    Attention,
    GatedMLP,
    GemmaRMSNorm,
    ParallelLMHead,
    QKVParallelLinear,
    RotaryTables,
    RowParallelLinear,
    VocabParallelEmbedding,
    get_rope,
    load_parameter,
    rotary_tables,
    rotate_heads,
    tp_of,
)

__all__ = (
    "Gemma2ForCausalLM",
    "GemmaAttention",
    "GemmaDecoderLayer",
    "GemmaModel",
    "load_fused_weights",
)

# HF name fragment -> (fused parameter fragment, shard index)
_STACKED = {
    ".q_proj.": (".qkv_proj.", 0),
    ".k_proj.": (".qkv_proj.", 1),
    ".v_proj.": (".qkv_proj.", 2),
    ".gate_proj.": (".gate_up_proj.", 0),
    ".up_proj.": (".gate_up_proj.", 1),
}
_SHARDS = {".qkv_proj.": 3, ".gate_up_proj.": 2}


def layer_types(config: Any) -> list[str]:
    """Each layer's type: the config's ``layer_types``, else Gemma 2's sliding/full alternation."""
    types = getattr(config, "layer_types", None)
    if types is None:
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(config.num_hidden_layers)]
    return list(types)


class GemmaAttention(nn.Module):
    """Fused qkv, optional per-head q/k norms (Gemma 3), rotary, paged attention, output projection.

    ``num_heads``/``num_kv_heads``/``q_size``/``kv_size`` are this rank's (all of them at tp 1).
    """

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qk_norm: bool, soft_cap: bool = True) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_size = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.layer_type = layer_types(config)[layer_idx]
        bias = bool(getattr(config, "attention_bias", False))
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_size, heads, kv_heads, bias=bias,
                                          rank=rank, size=size)
        shard = self.qkv_proj.heads
        self.num_heads, self.num_kv_heads = shard.num_heads, shard.num_kv_heads
        self.q_size, self.kv_size = self.qkv_proj.q_size, self.qkv_proj.kv_size
        self.o_proj = RowParallelLinear(heads * self.head_size, config.hidden_size, bias=bias, rank=rank, size=size,
                                        local_in=(shard.q_start * self.head_size, self.q_size))
        self.q_norm = GemmaRMSNorm(self.head_size, config.rms_norm_eps) if qk_norm else None
        self.k_norm = GemmaRMSNorm(self.head_size, config.rms_norm_eps) if qk_norm else None
        sliding = self.layer_type == "sliding_attention"
        self.attn = Attention(
            self.num_heads,
            self.num_kv_heads,
            self.head_size,
            config.query_pre_attn_scalar**-0.5,
            layer_idx,
            ctx.attention_backend,
            sliding_window=getattr(config, "sliding_window", None) if sliding else None,
            logits_soft_cap=(getattr(config, "attn_logit_softcapping", None) or None) if soft_cap else None,
        )

    def forward(self, hidden: torch.Tensor, ropes: dict[str, RotaryTables], batch: ForwardBatch) -> torch.Tensor:
        """[T, hidden] -> [T, hidden]; ``ropes`` maps each layer type to its rotary tables."""
        t = hidden.shape[0]
        qkv = self.qkv_proj(hidden)  # [T, q + 2 kv]
        rope = ropes[self.layer_type]
        qk = qkv[:, : self.q_size + self.kv_size].view(t, -1, self.head_size)  # [T, H + Hkv, D]
        if self.q_norm is None:
            qk = rotate_heads(qk, rope)  # q and k side by side: one pass
            q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        else:
            q = rotate_heads(self.q_norm(qk[:, : self.num_heads]), rope)
            k = rotate_heads(self.k_norm(qk[:, self.num_heads :]), rope)
        v = qkv[:, self.q_size + self.kv_size :]
        return self.o_proj(self.attn(q, k, v, batch))


class GemmaDecoderLayer(nn.Module):
    """Sandwich norms: ``x + post_norm(attn(pre_norm(x)))``, then the same around the GeGLU MLP."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qk_norm: bool, soft_cap: bool) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = GemmaAttention(config, ctx, layer_idx, qk_norm, soft_cap)
        act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "gelu_pytorch_tanh")
        rank, size = tp_of(ctx)
        self.mlp = GatedMLP(h, config.intermediate_size, activation=act, rank=rank, size=size)
        self.input_layernorm = GemmaRMSNorm(h, eps)
        self.post_attention_layernorm = GemmaRMSNorm(h, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(h, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(h, eps)

    def forward(self, hidden: torch.Tensor, ropes: dict[str, RotaryTables], batch: ForwardBatch) -> torch.Tensor:
        hidden = hidden + self.post_attention_layernorm(self.self_attn(self.input_layernorm(hidden), ropes, batch))
        return hidden + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(hidden)))


class GemmaModel(nn.Module):
    """Scaled embeddings, decoder layers, final norm; one rotary table per distinct rope setting."""

    def __init__(self, config: Any, ctx: ModelContext, variant: type[Gemma2ForCausalLM]) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        rank, size = tp_of(ctx)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, rank=rank, size=size)
        self.layers = nn.ModuleList(
            GemmaDecoderLayer(config, ctx, i, variant.qk_norm, variant.attn_soft_cap)
            for i in range(config.num_hidden_layers)
        )
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)
        head_size = self.layers[0].self_attn.head_size
        # Gemma 2 shares one rope; Gemma 3 has a local (sliding) and a global one
        types = sorted(set(layer_types(config)))
        per_type = variant.rope_per_layer_type
        self.rope_key = {t: t if per_type else "shared" for t in types}
        self.rotary_emb = nn.ModuleDict(
            {key: get_rope(config, head_size, t if per_type else None) for t, key in self.rope_key.items()}
        )

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)  # [T, hidden]
        # the normaliser is rounded to the model dtype first, as transformers does
        hidden = hidden * torch.tensor(self.hidden_size**0.5, dtype=hidden.dtype)
        tables = {k: rotary_tables(*rope(positions, batch), hidden.dtype) for k, rope in self.rotary_emb.items()}
        ropes = {t: tables[key] for t, key in self.rope_key.items()}  # layer type -> its tables
        for layer in self.layers:
            hidden = layer(hidden, ropes, batch)
        return self.norm(hidden)


class Gemma2ForCausalLM(nn.Module, CausalLM):
    """Gemma 2: LM head tied to the embeddings unless the config says otherwise, final logit soft cap."""

    #: per-head (1 + w) RMSNorm on queries and keys (Gemma 3)
    qk_norm: bool = False
    #: separate rope settings for sliding and full layers (Gemma 3)
    rope_per_layer_type: bool = False
    #: apply ``attn_logit_softcapping`` (transformers' Gemma 3 reads it but never applies it)
    attn_soft_cap: bool = True
    supports_tensor_parallel = True

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        self.config = config
        self.model = GemmaModel(config, ctx, type(self))
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", True))
        rank, size = tp_of(ctx)
        self.lm_head = ParallelLMHead(config.hidden_size, config.vocab_size, rank=rank, size=size)
        if self.tie_word_embeddings:
            self.lm_head.tie(self.model.embed_tokens)
        self.final_logit_softcapping = getattr(config, "final_logit_softcapping", None) or None

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        return self.model(input_ids, positions, batch)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, hidden] -> [n, vocab] float32, soft-capped as ``cap * tanh(logits / cap)`` when set."""
        logits = self.lm_head(hidden_states).float()  # gathered over the ranks: the full vocabulary
        if self.final_logit_softcapping:
            cap = self.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def lora_target(self, name: str) -> tuple[str, tuple[int, int] | None]:
        """q/k/v_proj -> rows of qkv_proj, gate/up_proj -> rows of gate_up_proj; other modules as named."""
        for fragment, (fused, index) in _STACKED.items():
            if fragment in f"{name}.":
                target = f"{name}.".replace(fragment, fused)[:-1]
                return target, _shard_rows(self, f"{target}.weight", index)
        return name, None

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the (partly fused) parameters; every parameter must be set."""
        load_fused_weights(self, weights)


def _shard_rows(model: nn.Module, param_name: str, index: int) -> tuple[int, int]:
    """(first local row, row count) of shard ``index`` inside fused parameter ``param_name`` (this rank's rows)."""
    module = model.get_submodule(param_name.rpartition(".")[0])
    _, count, local = module.spans[index]
    return local, count


def load_fused_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Load HF-named tensors into ``model`` (``model.layers.N.self_attn.qkv_proj``-style fused params).

    Raises:
        KeyError: a checkpoint tensor matches no parameter.
        ValueError: some parameter (or fused shard) got no tensor.
    """
    params = dict(model.named_parameters())
    tied = bool(getattr(model, "tie_word_embeddings", False))
    missing = {(n, i) for n in params for i in next(([*range(c)] for f, c in _SHARDS.items() if f in n), [None])}
    for name, tensor in weights:
        if "rotary_emb." in name or (name == "lm_head.weight" and tied):
            continue
        target, index = next(((name.replace(f, fused), i) for f, (fused, i) in _STACKED.items() if f in name), (name, None))
        param = params.get(target)
        if param is None:
            raise KeyError(f"Checkpoint tensor {name!r} has no matching parameter in {type(model).__name__}.")
        load_parameter(model, target, param, tensor, index)
        missing.discard((target, index))
    if missing:
        names = sorted(n if i is None else f"{n}[shard {i}]" for n, i in missing)
        raise ValueError(f"The checkpoint lacks tensors for: {', '.join(names)}.")
