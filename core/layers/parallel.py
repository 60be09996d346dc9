"""Tensor-parallel building blocks: how a model's projections, heads and vocabulary split over ranks.

Every class here is an ``nn.Linear`` (or ``nn.Embedding``) holding this rank's shard, so linear
kernels convert it like any projection; with ``tp_size == 1`` each is exactly the plain layer.

- :class:`ColumnParallelLinear` splits the output features (no communication: the next layer
  consumes the shard); :class:`MergedColumnParallelLinear` (gate/up) and
  :class:`QKVParallelLinear` (q/k/v by heads) split each fused part on its own.
- :class:`RowParallelLinear` splits the input features and sums the partial outputs over the ranks
  (one all-reduce); its bias lives on rank 0 only, so the sum adds it once.
- :class:`VocabParallelEmbedding` holds a slice of the vocabulary (ids outside it give zeros, then
  an all-reduce); :class:`ParallelLMHead` computes its slice of the logits and gathers them.

Shards need not be equal: :func:`split_sizes` gives earlier ranks one more row when the total
does not divide. Heads split by key/value groups (:func:`shard_heads`), so every rank keeps whole
groups; with fewer KV heads than ranks each rank holds one replicated KV head. Checkpoint tensors
are full size: each layer's ``weight_loader(param, tensor, shard)`` copies this rank's slice. A
:class:`heron.layers.quantized.QuantizedTensor` (a GGUF checkpoint's blocks, when the linear kernel
computes on them) is kept as blocks: its slice is stored on the parameter (``param.stored``), not copied.

The collective a layer needs after its matmul is its ``tp_output`` (None at ``tp_size == 1``);
:func:`heron.layers.apply_linear_kernel` keeps it when a kernel replaces the module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from heron.distributed import all_gather, all_reduce
from heron.layers.quantized import QuantizedTensor, store_rows, stored_weight

__all__ = (
    "ColumnParallelLinear",
    "HeadShard",
    "MergedColumnParallelLinear",
    "ParallelLMHead",
    "ParallelOutput",
    "QKVParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
    "load_parameter",
    "shard_heads",
    "shard_range",
    "split_sizes",
    "tp_of",
)

log = logging.getLogger(__name__)


def tp_of(ctx: Any) -> tuple[int, int]:
    """(rank, size) from a :class:`heron.interfaces.ModelContext` (or anything with tp_rank/tp_size)."""
    return int(getattr(ctx, "tp_rank", 0) or 0), int(getattr(ctx, "tp_size", 1) or 1)


def split_sizes(total: int, parts: int) -> list[int]:
    """``total`` rows over ``parts`` ranks as evenly as possible (earlier ranks take the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (r < extra) for r in range(parts)]


def shard_range(total: int, rank: int, size: int) -> tuple[int, int]:
    """(first row, row count) of rank ``rank``'s shard of ``total`` rows."""
    sizes = split_sizes(total, size)
    return sum(sizes[:rank]), sizes[rank]


@dataclass(frozen=True, slots=True)
class HeadShard:
    """The attention heads one rank holds: query heads and the key/value heads they read."""

    q_start: int
    num_heads: int
    kv_start: int
    num_kv_heads: int


def shard_heads(num_heads: int, num_kv_heads: int, rank: int, size: int) -> HeadShard:
    """Split heads over ``size`` ranks keeping key/value groups whole.

    With at least as many KV heads as ranks, KV heads split as evenly as possible and each rank
    takes the query heads of its groups. With fewer, every rank holds one KV head (replicated)
    and an equal share of that head's query heads.

    Raises:
        ValueError: the heads cannot be split that way (say which).
    """
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} attention heads do not form groups over {num_kv_heads} KV heads.")
    group = num_heads // num_kv_heads
    if size == 1:
        return HeadShard(0, num_heads, 0, num_kv_heads)
    if num_kv_heads >= size:
        kv_start, kv_count = shard_range(num_kv_heads, rank, size)
        return HeadShard(kv_start * group, kv_count * group, kv_start, kv_count)
    if size % num_kv_heads or group % (size // num_kv_heads):
        raise ValueError(f"tensor parallel size {size} cannot split {num_heads} attention heads over "
                         f"{num_kv_heads} KV heads: with fewer KV heads than ranks, the size must be a multiple "
                         f"of the KV heads and divide each group of {group} query heads.")
    per_kv = size // num_kv_heads  # ranks sharing one KV head
    heads = group // per_kv
    return HeadShard(rank * heads, heads, rank // per_kv, 1)


class ParallelOutput(nn.Module):
    """A kernel-converted projection followed by the collective its tensor-parallel layer needs."""

    def __init__(self, inner: nn.Module, collective: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.inner = inner
        self.collective = collective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.collective(self.inner(x))


class _ShardedLinear(nn.Linear):
    """An ``nn.Linear`` over this rank's rows; ``parts`` are the fused parts' (full, local) row spans."""

    #: the collective after the matmul (None: the output stays sharded)
    tp_output: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int, size: int) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.tp_rank, self.tp_size = rank, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, _dense_weight(self.weight), self.bias)
        return y if self.tp_output is None else self.tp_output(y)


def _dense_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight``, or its stored blocks dequantized when no kernel converted the layer (slow, but exact)."""
    stored = stored_weight(weight)
    return weight if stored is None else stored.dequantize(weight).to(weight.dtype)


def _rows(tensor: torch.Tensor, start: int, count: int) -> torch.Tensor:
    if isinstance(tensor, QuantizedTensor):
        return tensor.rows(start, count)
    return tensor[start : start + count]


class ColumnParallelLinear(_ShardedLinear):
    """``y[:, shard] = x W[shard]^T + b[shard]``: this rank's share of the output features.

    ``out_features`` as a list (fused projections): the full size of each part; each is split on
    its own and the local parts sit side by side (``[part0 local, part1 local, ...]``). ``shards``
    overrides the even split: per part, (first row in the full tensor, local row count).
    """

    def __init__(self, in_features: int, out_features: int | list[int], *, bias: bool = True,
                 rank: int = 0, size: int = 1, shards: list[tuple[int, int]] | None = None) -> None:
        parts = list(out_features) if isinstance(out_features, list | tuple) else [out_features]
        # per part: (first row in the full tensor, row count); an even split unless given
        shards = shards or [shard_range(full, rank, size) for full in parts]
        if len(shards) != len(parts):
            raise ValueError(f"{len(shards)} shards given for {len(parts)} fused parts.")
        #: per part: (first row in the full tensor, local row count, first local row)
        self.spans: list[tuple[int, int, int]] = []
        local = 0
        for start, count in shards:
            self.spans.append((start, count, local))
            local += count
        super().__init__(in_features, local, bias, rank, size)
        self.full_sizes = parts

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: int | None = None) -> None:
        """Copy this rank's rows of ``loaded`` (one part when ``shard`` is given, else all parts
        fused in the checkpoint's order) into ``param`` (``weight`` or ``bias``)."""
        with torch.no_grad():
            if shard is None:
                offset = 0
                for i, full in enumerate(self.full_sizes):
                    self.weight_loader(param, _rows(loaded, offset, full), i)
                    offset += full
                return
            start, count, local = self.spans[shard]
            if isinstance(loaded, QuantizedTensor):
                store_rows(param, local, loaded.rows(start, count))
                return
            param[local : local + count].copy_(loaded[start : start + count].view(count, *param.shape[1:]))


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Fused gate/up (or any same-input projections), each part split on its own."""

    def __init__(self, in_features: int, out_sizes: list[int], *, bias: bool = False, rank: int = 0,
                 size: int = 1) -> None:
        super().__init__(in_features, list(out_sizes), bias=bias, rank=rank, size=size)


class QKVParallelLinear(ColumnParallelLinear):
    """Fused q/k/v over this rank's heads (:func:`shard_heads`); ``shard`` 0/1/2 or "q"/"k"/"v"."""

    def __init__(self, hidden_size: int, head_size: int, num_heads: int, num_kv_heads: int, *,
                 bias: bool = False, rank: int = 0, size: int = 1) -> None:
        heads = shard_heads(num_heads, num_kv_heads, rank, size)
        self.heads, self.head_size = heads, head_size
        self.total_num_heads, self.total_num_kv_heads = num_heads, num_kv_heads
        # rows by whole heads (kv-group aligned), not an even row split
        q, kv = (heads.q_start * head_size, heads.num_heads * head_size), (heads.kv_start * head_size,
                                                                           heads.num_kv_heads * head_size)
        full_kv = num_kv_heads * head_size
        super().__init__(hidden_size, [num_heads * head_size, full_kv, full_kv], bias=bias, rank=rank, size=size,
                         shards=[q, kv, kv])

    @property
    def q_size(self) -> int:
        return self.heads.num_heads * self.head_size

    @property
    def kv_size(self) -> int:
        return self.heads.num_kv_heads * self.head_size

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: int | str | None = None) -> None:
        super().weight_loader(param, loaded, "qkv".index(shard) if isinstance(shard, str) else shard)


class RowParallelLinear(_ShardedLinear):
    """``y = sum over ranks of x[:, shard] W[:, shard]^T``, plus the bias (held by rank 0).

    ``local_in``: (first input column, local column count) when this rank's input is not an even
    split of ``in_features`` (e.g. ``o_proj`` after a head split: the rank's query heads' columns).
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, rank: int = 0, size: int = 1,
                 local_in: tuple[int, int] | None = None) -> None:
        #: (first input column in the full tensor, local column count)
        self.in_span = local_in or shard_range(in_features, rank, size)
        super().__init__(self.in_span[1], out_features, bias, rank, size)
        if size > 1:
            self.tp_output = all_reduce

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: Any = None) -> None:
        """Weight: this rank's input columns. Bias: rank 0's is the checkpoint's, the others zero."""
        with torch.no_grad():
            if param.dim() == 1:
                param.copy_(loaded) if self.tp_rank == 0 else param.zero_()
                return
            start, count = self.in_span
            if isinstance(loaded, QuantizedTensor):
                part = loaded if (start, count) == (0, loaded.shape[1]) else loaded.cols(start, count)
                if part is not None:
                    store_rows(param, 0, part)
                    return
                log.info("input columns %d..%d of a row-parallel weight (GGML type %d) do not fall on quantized "
                         "block boundaries: the layer runs dequantized", start, start + count, loaded.qtype)
                loaded = loaded.dequantize()
            param.copy_(loaded[:, start : start + count])


class VocabParallelEmbedding(nn.Embedding):
    """This rank's rows of the vocabulary; other ids look up zeros, and the ranks' rows are summed."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, rank: int = 0, size: int = 1, **kwargs: Any) -> None:
        self.vocab_start, count = shard_range(num_embeddings, rank, size)
        self.vocab_sizes = split_sizes(num_embeddings, size)
        super().__init__(count, embedding_dim, **kwargs)
        self.full_num_embeddings = num_embeddings
        self.tp_rank, self.tp_size = rank, size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return self._lookup(ids)
        local = ids - self.vocab_start
        outside = (local < 0) | (local >= self.num_embeddings)
        out = self._lookup(local.masked_fill(outside, 0))  # [T, D]
        return all_reduce(out.masked_fill_(outside.unsqueeze(-1), 0))

    def _lookup(self, local_ids: torch.Tensor) -> torch.Tensor:
        """[T] local row ids -> [T, D]; stored quantized rows dequantize only the rows looked up."""
        stored = stored_weight(self.weight)
        if stored is None:
            return super().forward(local_ids)
        return stored.lookup(local_ids).to(self.weight.dtype)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: Any = None) -> None:
        if isinstance(loaded, QuantizedTensor):
            store_rows(param, 0, loaded.rows(self.vocab_start, self.num_embeddings))
            return
        with torch.no_grad():
            param.copy_(loaded[self.vocab_start : self.vocab_start + self.num_embeddings])


class ParallelLMHead(_ShardedLinear):
    """Logits over this rank's slice of the vocabulary, gathered into the full ``[n, vocab]``."""

    def __init__(self, hidden_size: int, vocab_size: int, *, bias: bool = False, rank: int = 0, size: int = 1) -> None:
        self.vocab_start, count = shard_range(vocab_size, rank, size)
        super().__init__(hidden_size, count, bias, rank, size)
        if size > 1:
            self.tp_output = partial(all_gather, sizes=split_sizes(vocab_size, size))

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: Any = None) -> None:
        if isinstance(loaded, QuantizedTensor):
            store_rows(param, 0, loaded.rows(self.vocab_start, param.shape[0]))
            return
        with torch.no_grad():
            param.copy_(loaded[self.vocab_start : self.vocab_start + param.shape[0]])

    def tie(self, embedding: VocabParallelEmbedding) -> None:
        """Share the embedding's weight (the same vocabulary slice on every rank)."""
        self.weight = embedding.weight


def load_parameter(model: nn.Module, name: str, param: torch.Tensor, tensor: torch.Tensor, shard: Any = None) -> None:
    """Copy the full checkpoint ``tensor`` into parameter ``name`` of ``model``.

    A tensor-parallel layer (any module with a ``weight_loader``) copies this rank's slice
    (``shard``: the part of a fused projection); any other parameter is replicated and copied whole.
    """
    module = model.get_submodule(name.rpartition(".")[0])
    loader = getattr(module, "weight_loader", None)
    if loader is not None:
        loader(param, tensor, shard)
        return
    with torch.no_grad():
        param.copy_(tensor.view_as(param))
