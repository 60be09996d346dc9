"""BERT and XLM-RoBERTa encoders (``BertModel``, ``XLMRobertaModel``) and their sequence classifiers.

A post-LayerNorm transformer encoder with bidirectional attention (``Attention(causal=False)``):
the engine gives each request's whole prompt in one step, so every token sees the whole prompt.
Embeddings are word + token type + absolute position, then a LayerNorm; XLM-RoBERTa numbers
positions from ``pad_token_id + 1`` like fairseq. q/k/v are one fused ``nn.Linear``.

Token types (BERT cross-encoders feed sentence pairs ``[CLS] A [SEP] B [SEP]``, B with type 1):
the forward contract carries token ids only, so the model derives them from the ids: a token's
type is the number of ``sep_token_id`` tokens before it in its request, capped at
``type_vocab_size - 1``. That is exactly what HF tokenizers emit for one text or a pair, needs no
extra engine input, and stays all-zero when ``sep_token_id`` is unknown or the vocabulary has one
type. XLM-RoBERTa never derives them: its tokenizer gives every token type 0, pairs included. HF configs do not carry the separator id, so it is taken from
``config.sep_token_id`` when set, else ``ctx.extra["sep_token_id"]``; the engine sets
``model.sep_token_id`` from the tokenizer when neither did. (A literal separator token inside a
single text would start type 1 early; tokenizers do not emit one from plain text.)

Tensor parallel: q/k/v split by heads, the attention output and MLP output projections are row
parallel (one all-reduce each) after the column-parallel MLP input; word embeddings are
vocabulary-parallel; position/token-type embeddings, LayerNorms and the pooler/classifier heads are
replicated, so every rank ends with the full hidden states.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from heron.interfaces import ForwardBatch, ModelContext, PoolingModel
from heron.layers import (
    Attention,
    ColumnParallelLinear,
    LayerNorm,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    get_act_fn,
    load_parameter,
    tp_of,
)

__all__ = ("BertForSequenceClassification", "BertModel", "XLMRobertaForSequenceClassification", "XLMRobertaModel")

_PREFIXES = ("bert.", "roberta.")
#: non-persistent buffers that old checkpoints saved
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
#: HF submodule of an encoder layer -> heron's (q/k/v are fused into ``qkv_proj``)
_LAYER_NAMES = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp_in",
    "output.dense": "mlp_out",
    "output.LayerNorm": "mlp_norm",
}
_QKV = ("query", "key", "value")


class BertEmbeddings(nn.Module):
    """Word + token type + position embeddings, then LayerNorm."""

    def __init__(self, config: Any, position_offset: int, rank: int = 0, size: int = 1) -> None:
        super().__init__()
        self.word_embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size, rank=rank, size=size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.position_offset = position_offset

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        """[T] ids, positions, token types -> [T, H]."""
        hidden = self.word_embeddings(input_ids) + self.token_type_embeddings(token_types)
        hidden = hidden + self.position_embeddings(positions + self.position_offset)
        return self.LayerNorm(hidden)


class BertLayer(nn.Module):
    """Bidirectional self-attention and a GeLU MLP, each followed by residual + LayerNorm (post-LN)."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int) -> None:
        super().__init__()
        rank, size = tp_of(ctx)
        width, heads, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
        head_size = width // heads
        self.qkv_proj = QKVParallelLinear(width, head_size, heads, heads, bias=True, rank=rank, size=size)
        local = self.qkv_proj.heads
        self.width = self.qkv_proj.q_size  # this rank's heads * head_size (all of them at tp 1)
        self.attn = Attention(local.num_heads, local.num_heads, head_size, head_size**-0.5, layer_idx,
                              ctx.attention_backend, causal=False)
        self.attn_out = RowParallelLinear(width, width, rank=rank, size=size,
                                          local_in=(local.q_start * head_size, self.width))
        self.attn_norm = LayerNorm(width, eps)
        self.mlp_in = ColumnParallelLinear(width, config.intermediate_size, rank=rank, size=size)
        self.act = get_act_fn(config.hidden_act)
        self.mlp_out = RowParallelLinear(config.intermediate_size, width, rank=rank, size=size)
        self.mlp_norm = LayerNorm(width, eps)

    def forward(self, hidden: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """[T, H] -> [T, H]."""
        q, k, v = self.qkv_proj(hidden).split(self.width, dim=-1)  # each [T, local H]
        hidden = self.attn_norm(self.attn_out(self.attn(q, k, v, batch)) + hidden)
        return self.mlp_norm(self.mlp_out(self.act(self.mlp_in(hidden))) + hidden)


def token_types(input_ids: torch.Tensor, batch: ForwardBatch, sep_token_id: int, max_type: int) -> torch.Tensor:
    """Each token's segment: separators before it in its own request, capped at ``max_type``. [T] -> [T]."""
    is_sep = (input_ids == sep_token_id).long()  # [T]
    before = torch.cumsum(is_sep, 0) - is_sep  # [T] separators before each token, whole batch
    starts = batch.query_start_loc[:-1].to(device=input_ids.device, dtype=torch.long)  # [R]
    q_lens = torch.tensor(batch.query_lens, device=input_ids.device)  # [R]
    return (before - before[starts].repeat_interleave(q_lens)).clamp_(max=max_type)


class BertModel(nn.Module, PoolingModel):
    """The BERT encoder: ``forward`` gives the last hidden state ``[T, H]`` (no pooler)."""

    supported_tasks: ClassVar[tuple[str, ...]] = ("embed", "encode")
    #: number positions from ``pad_token_id + 1`` (RoBERTa) rather than 0
    roberta_positions: ClassVar[bool] = False
    #: derive token types from separators (RoBERTa tokenizers give every token type 0, pairs too)
    pair_token_types: ClassVar[bool] = True
    #: splits over ``ctx.tp_size`` ranks (heads, MLP, word embeddings; heads replicated)
    supports_tensor_parallel: ClassVar[bool] = True

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        offset = config.pad_token_id + 1 if self.roberta_positions else 0
        self.embeddings = BertEmbeddings(config, offset, *tp_of(ctx))
        self.layers = nn.ModuleList(BertLayer(config, ctx, i) for i in range(config.num_hidden_layers))
        sep = getattr(config, "sep_token_id", None)
        #: the separator id that starts token type 1 (see the module docstring); None: all type 0
        self.sep_token_id: int | None = sep if sep is not None else (ctx.extra or {}).get("sep_token_id")

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """[T] ids and positions (each request whole, from 0) -> last hidden state [T, H]."""
        max_type = self.config.type_vocab_size - 1
        if self.sep_token_id is None or max_type == 0 or not self.pair_token_types:
            types = torch.zeros_like(input_ids)
        else:
            types = token_types(input_ids, batch, self.sep_token_id, max_type)
        hidden = self.embeddings(input_ids, positions, types)
        for layer in self.layers:
            hidden = layer(hidden, batch)
        return hidden

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors, with or without the ``bert.``/``roberta.`` prefix; every parameter must be set.

        Raises:
            KeyError: a checkpoint tensor this model has no place for.
            ValueError: the checkpoint lacks some parameter.
        """
        params = dict(self.named_parameters())
        missing = set(params)
        qkv_seen: dict[str, set[int]] = {}
        for hf_name, tensor in weights:
            name = _local_name(hf_name)
            if name.endswith(_BUFFERS) or (name.startswith("pooler.") and "pooler.dense.weight" not in params):
                continue  # saved buffers; the pooler of an encoder served without it
            name, shard = _heron_name(name)
            param = params.get(name)
            if param is None:
                raise KeyError(f"Checkpoint tensor {hf_name!r} has no matching parameter in {type(self).__name__}.")
            load_parameter(self, name, param, tensor, shard)  # this rank's slice (qkv_proj: the q, k or v part)
            if shard is not None:
                qkv_seen.setdefault(name, set()).add(shard)
            if shard is None or len(qkv_seen[name]) == 3:  # a fused qkv parameter is set once q, k and v are
                missing.discard(name)
        if missing:
            raise ValueError(f"The checkpoint lacks tensors for: {', '.join(sorted(missing))}.")


class BertForSequenceClassification(BertModel):
    """BERT with its classifier: ``classifier(tanh(pooler.dense(h[CLS])))``."""

    supported_tasks: ClassVar[tuple[str, ...]] = ("classify",)

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        self.num_labels = config.num_labels
        self.pooler = _Head(config.hidden_size, "dense")
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """One prompt's hidden states [n, H] -> logits [num_labels] fp32."""
        return self.classifier(torch.tanh(self.pooler.dense(hidden[0]))).float()


class XLMRobertaModel(BertModel):
    """The XLM-RoBERTa encoder: BERT with positions numbered from ``pad_token_id + 1``, all token types 0."""

    roberta_positions: ClassVar[bool] = True
    pair_token_types: ClassVar[bool] = False


class XLMRobertaForSequenceClassification(XLMRobertaModel):
    """XLM-RoBERTa with its classification head: ``out_proj(tanh(dense(h[<s>])))``."""

    supported_tasks: ClassVar[tuple[str, ...]] = ("classify",)

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__(config, ctx)
        self.num_labels = config.num_labels
        self.classifier = _Head(config.hidden_size, "dense")
        self.classifier.out_proj = nn.Linear(config.hidden_size, self.num_labels)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """One prompt's hidden states [n, H] -> logits [num_labels] fp32."""
        head = self.classifier
        return head.out_proj(torch.tanh(head.dense(hidden[0]))).float()


class _Head(nn.Module):
    """A holder whose ``dense`` projection keeps the HF name (``pooler.dense``, ``classifier.dense``)."""

    def __init__(self, width: int, name: str) -> None:
        super().__init__()
        self.add_module(name, nn.Linear(width, width))


def _check_config(config: Any) -> None:
    """Refuse options that change the math and that heron does not implement."""
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ValueError("heron serves BERT-style models as bidirectional encoders, not decoders (is_decoder=True).")
    kind = getattr(config, "position_embedding_type", "absolute")
    if kind != "absolute":
        raise ValueError(f"heron's BERT supports absolute position embeddings only, not {kind!r}.")


def _local_name(name: str) -> str:
    """Drop the base-model prefix and rename legacy ``gamma``/``beta`` LayerNorm tensors."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if ".LayerNorm." in name:
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return name


def _heron_name(name: str) -> tuple[str, int | None]:
    """HF name (prefix dropped) -> (heron parameter name, q/k/v shard of ``qkv_proj`` or None)."""
    if not name.startswith("encoder.layer."):
        return name, None
    index, rest = name[len("encoder.layer.") :].split(".", 1)
    module, leaf = rest.rsplit(".", 1)
    if module.startswith("attention.self."):
        kind = module[len("attention.self.") :]
        if kind in _QKV:
            return f"layers.{index}.qkv_proj.{leaf}", _QKV.index(kind)
    return f"layers.{index}.{_LAYER_NAMES.get(module, module)}.{leaf}", None
