"""Llama-family decoders (Llama, Mistral, Qwen2) built from :mod:`heron.layers`.

The three differ only in details read off the HF config: Qwen2 always has q/k/v biases,
Mistral may use a sliding window, Llama may carry ``attention_bias``/``mlp_bias``. q/k/v and
gate/up are fused into single matmuls (fewer, larger GEMMs are faster on CPU); ``load_weights``
slices the HF tensors into them.

Tensor parallel: every layer comes from :mod:`heron.layers.parallel` with ``rank, size =
tp_of(ctx)``. Heads split by key/value groups (q/k/v column parallel, ``o_proj`` row parallel),
gate/up column parallel and ``down_proj`` row parallel, so each block half ends in one
all-reduce; the embedding and LM head split the vocabulary. Checkpoint tensors are full size and
each layer's ``weight_loader`` copies its rank's slice. At ``tp_size == 1`` the layers are the
plain ``nn.Linear`` / ``nn.Embedding``.
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
    ParallelLMHead,
    QKVParallelLinear,
    RMSNorm,
    RotaryTables,
    RowParallelLinear,
    VocabParallelEmbedding,
    get_rope,
    rotary_tables,
    rotate_heads,
    tp_of,
)
from heron_plugins.models.native_stack import NativeStack

__all__ = (
    "LlamaAttention",
    "LlamaDecoderLayer",
    "LlamaForCausalLM",
    "LlamaModel",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
)


class LlamaAttention(nn.Module):
    """Fused qkv projection, rotary, paged attention, output projection.

    ``num_heads``/``num_kv_heads``/``q_size``/``kv_size`` are this rank's (``heads`` says which);
    the ``total_*`` attributes are the model's. Extension points for variants: :meth:`project_qk`
    (e.g. q/k norms), :meth:`softmax_scale` and the ``use_rope`` attribute (layers without
    positional rotation).
    """

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        self.total_num_heads = config.num_attention_heads
        self.total_num_kv_heads = getattr(config, "num_key_value_heads", None) or self.total_num_heads
        self.head_size = getattr(config, "head_dim", None) or config.hidden_size // self.total_num_heads
        #: rotate q/k with rope (False for NoPE layers)
        self.use_rope = True
        bias = bool(getattr(config, "attention_bias", False))
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size, self.head_size, self.total_num_heads, self.total_num_kv_heads,
            bias=bias or qkv_bias, rank=rank, size=size,
        )  # [q_size + 2 * kv_size, hidden] local rows
        self.heads = self.qkv_proj.heads
        self.num_heads, self.num_kv_heads = self.heads.num_heads, self.heads.num_kv_heads
        self.q_size, self.kv_size = self.qkv_proj.q_size, self.qkv_proj.kv_size
        self.o_proj = RowParallelLinear(
            self.total_num_heads * self.head_size, config.hidden_size, bias=bias, rank=rank, size=size,
            local_in=(self.heads.q_start * self.head_size, self.q_size),
        )
        self.attn = Attention(
            self.num_heads,
            self.num_kv_heads,
            self.head_size,
            self.softmax_scale(config),
            layer_idx,
            ctx.attention_backend,
            sliding_window=_sliding_window(config, layer_idx),
        )

    def softmax_scale(self, config: Any) -> float:
        """The scale applied to q·k before the softmax (``head_size ** -0.5`` unless a variant says otherwise)."""
        return self.head_size**-0.5

    def project_qk(self, qkv: torch.Tensor) -> torch.Tensor:
        """[T, q_size + 2 * kv_size] fused projection -> q and k heads side by side, before rope: [T, H + Hkv, D]."""
        return qkv[:, : self.q_size + self.kv_size].view(qkv.shape[0], -1, self.head_size)

    def forward(self, hidden: torch.Tensor, rope: RotaryTables, batch: ForwardBatch) -> torch.Tensor:
        """[T, hidden] -> [T, hidden]."""
        qkv = self.qkv_proj(hidden)
        # q and k sit side by side in the fused output: rotate both heads in one pass
        qk = self.project_qk(qkv)
        if self.use_rope:
            qk = rotate_heads(qk, rope)
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[:, self.q_size + self.kv_size :]
        return self.o_proj(self.attn(q, k, v, batch))


def _sliding_window(config: Any, layer_idx: int) -> int | None:
    """The window of layer ``layer_idx``: per-layer ``layer_types`` when given, else the config's."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return window if layer_types[layer_idx] == "sliding_attention" else None
    return window


class LlamaDecoderLayer(nn.Module):
    """Pre-norm attention block then pre-norm gated MLP block, each with a residual."""

    #: the attention block class (variants add q/k norms, another softmax scale, NoPE layers)
    attention_cls: type[LlamaAttention] = LlamaAttention

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__()
        self.self_attn = self.attention_cls(config, ctx, layer_idx, qkv_bias)
        self.mlp = self.build_mlp(config, ctx, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def build_mlp(self, config: Any, ctx: ModelContext, layer_idx: int) -> nn.Module:
        """The feed-forward block of layer ``layer_idx`` (subclasses swap in e.g. a mixture of experts)."""
        bias = bool(getattr(config, "mlp_bias", False))
        act = getattr(config, "hidden_act", None) or "silu"
        rank, size = tp_of(ctx)
        return GatedMLP(config.hidden_size, config.intermediate_size, bias=bias, activation=act, rank=rank, size=size)

    def forward(self, hidden: torch.Tensor, rope: RotaryTables, batch: ForwardBatch) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(hidden), rope, batch)
        normed, hidden = self.post_attention_layernorm(attn, hidden)  # residual add and norm: one fused op
        return hidden + self.mlp(normed)


class LlamaModel(nn.Module):
    """Embeddings, decoder layers, final norm."""

    def __init__(
        self, config: Any, ctx: ModelContext, qkv_bias: bool, layer_cls: type[LlamaDecoderLayer] = LlamaDecoderLayer
    ) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, rank=rank, size=size)
        self.layers = nn.ModuleList(layer_cls(config, ctx, i, qkv_bias) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = get_rope(config, self.layers[0].self_attn.head_size)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[T] token ids -> [T, hidden] input embeddings (variants scale them)."""
        return self.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        hidden = self.embed(input_ids)  # [T, hidden]
        rope = rotary_tables(*self.rotary_emb(positions, batch), hidden.dtype)  # once, shared by every layer
        native = self._native_stack(hidden.dtype)
        out = None if native is None else native.run(hidden, rope, batch)
        if out is not None:
            return self.norm(out)
        for layer in self.layers:
            hidden = layer(hidden, rope, batch)
        return self.norm(hidden)

    def _native_stack(self, dtype: torch.dtype) -> NativeStack | None:
        """The layers as one C++ call (:mod:`heron_plugins.models.native_stack`) when they and their kernels
        allow it: the same ops and bits as the modules, without the per-op Python cost of a decode step."""
        native = self.__dict__.get("_native")
        if native is False or (native is not None and native.current()):
            return native or None  # False: checked, not possible for these layers
        native = NativeStack.for_layers(self.layers, LlamaDecoderLayer, LlamaAttention, dtype)
        self.__dict__["_native"] = native if native is not None else False
        return native


class LlamaForCausalLM(nn.Module, CausalLM):
    """Llama decoder with an LM head (tied to the embeddings when the config says so)."""

    #: every subclass inherits the split attention, MLP and vocabulary; a feed-forward block built
    #: without ``rank``/``size`` (e.g. experts) is replicated on every rank, which is still exact
    supports_tensor_parallel = True

    #: q/k/v projections always carry a bias (Qwen2), whatever ``attention_bias`` says
    qkv_bias: bool = False
    #: the decoder layer class (subclasses override ``build_mlp`` for other feed-forward blocks)
    decoder_layer_cls: type[LlamaDecoderLayer] = LlamaDecoderLayer
    #: the decoder stack class (variants override :meth:`LlamaModel.embed`)
    model_cls: type[LlamaModel] = LlamaModel

    # HF name fragment -> (fused parameter fragment, shard index)
    _stacked = {
        ".q_proj.": (".qkv_proj.", 0),
        ".k_proj.": (".qkv_proj.", 1),
        ".v_proj.": (".qkv_proj.", 2),
        ".gate_proj.": (".gate_up_proj.", 0),
        ".up_proj.": (".gate_up_proj.", 1),
    }

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        self.config = config
        self.model = self.model_cls(config, ctx, self.qkv_bias, self.decoder_layer_cls)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        rank, size = tp_of(ctx)
        self.lm_head = ParallelLMHead(config.hidden_size, config.vocab_size, rank=rank, size=size)
        if self.tie_word_embeddings:
            self.lm_head.tie(self.model.embed_tokens)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        return self.model(input_ids, positions, batch)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, hidden] -> [n, vocab] in the model's dtype: the LM head rounds to it anyway, and a greedy
        batch's argmax reads them as they are (a float32 copy of 64 rows is 12.6 MB a step here); the
        sampler widens the rows it edits."""
        return self.lm_head(hidden_states)

    def _shard(self, name: str) -> tuple[str, int | None]:
        for fragment, (fused, index) in self._stacked.items():
            if fragment in name:
                return name.replace(fragment, fused), index
        return name, None

    def _shard_rows(self, param_name: str, index: int) -> tuple[int, int]:
        """(first row, row count) of shard ``index`` inside a fused parameter."""
        layer = int(param_name.split(".")[2])
        if ".qkv_proj." in param_name:
            attn = self.model.layers[layer].self_attn
            sizes = [attn.q_size, attn.kv_size, attn.kv_size]
        else:
            sizes = [self.config.intermediate_size] * 2
        return sum(sizes[:index]), sizes[index]

    def lora_target(self, name: str) -> tuple[str, tuple[int, int] | None]:
        """q/k/v_proj -> rows of qkv_proj, gate/up_proj -> rows of gate_up_proj; other modules as named."""
        fused, index = self._shard(f"{name}.")
        if index is None:
            return name, None
        return fused[:-1], self._shard_rows(f"{fused}weight", index)

    def _load_param(self, target: str, param: torch.Tensor, tensor: torch.Tensor, index: int | None) -> None:
        """Copy a full checkpoint tensor (shard ``index`` of a fused parameter, or all of it) into ``param``.

        A module with a ``weight_loader`` (the tensor-parallel layers) copies its rank's slice;
        other parameters (norms, stacked experts) are replicated and copied whole.
        """
        loader = getattr(self.get_submodule(target.rpartition(".")[0]), "weight_loader", None)
        if loader is not None:
            loader(param, tensor, index)
            return
        with torch.no_grad():
            if index is None:
                param.copy_(tensor.view_as(param))
            else:
                start, rows = self._shard_rows(target, index)
                param[start : start + rows].copy_(tensor.view(rows, *param.shape[1:]))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the (partly fused) parameters; every parameter must be set."""
        params = dict(self.named_parameters())
        shards = {".qkv_proj.": 3, ".gate_up_proj.": 2}
        missing = {
            (n, i) for n in params for i in next(([*range(c)] for f, c in shards.items() if f in n), [None])
        }
        for name, tensor in weights:
            if "rotary_emb." in name or (name == "lm_head.weight" and self.tie_word_embeddings):
                continue
            target, index = self._shard(name)
            param = params.get(target)
            if param is None:
                raise KeyError(f"Checkpoint tensor {name!r} has no matching parameter in {type(self).__name__}.")
            self._load_param(target, param, tensor, index)
            missing.discard((target, index))
        if missing:
            names = sorted(n if i is None else f"{n}[shard {i}]" for n, i in missing)
            raise ValueError(f"The checkpoint lacks tensors for: {', '.join(names)}.")


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral: Llama with an optional sliding window (read from the config)."""


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2: Llama with biases on the q/k/v projections."""

    qkv_bias = True
