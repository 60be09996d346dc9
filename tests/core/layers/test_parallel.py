"""heron.layers.parallel: how rows, heads and the vocabulary split, and that the shards add up.

No process group is started here: without one every collective is the identity, so each rank's
layer returns its partial result and the test combines the ranks by hand (concatenating column
shards, summing row shards) and compares with the unsplit layer. The collectives themselves run
in tests/plugins/models/test_tp_llama_family.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heron.layers import (
    ColumnParallelLinear,
    GatedMLP,
    HeadShard,
    MergedColumnParallelLinear,
    ParallelLMHead,
    ParallelOutput,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    apply_linear_kernel,
    shard_heads,
    shard_range,
    split_sizes,
    tp_of,
)
from heron.plugins import registry

torch.manual_seed(0)


def _loaded(layer: nn.Module, **tensors: torch.Tensor) -> nn.Module:
    for name, full in tensors.items():
        layer.weight_loader(getattr(layer, name), full)
    return layer


# -- splits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "parts", "want"), [(10, 3, [4, 3, 3]), (8, 2, [4, 4]), (2, 3, [1, 1, 0]),
                                                      (259, 3, [87, 86, 86]), (5, 1, [5])])
def test_split_sizes_and_ranges(total, parts, want):
    assert split_sizes(total, parts) == want
    starts = [shard_range(total, r, parts)[0] for r in range(parts)]
    assert starts == [sum(want[:r]) for r in range(parts)]
    assert [shard_range(total, r, parts)[1] for r in range(parts)] == want


def test_tp_of_reads_a_context_or_defaults():
    class Ctx:
        tp_rank, tp_size = 1, 4

    assert tp_of(Ctx()) == (1, 4) and tp_of(object()) == (0, 1)


@pytest.mark.parametrize(("heads", "kv", "size", "want"), [
    (4, 2, 1, [HeadShard(0, 4, 0, 2)]),
    (4, 2, 2, [HeadShard(0, 2, 0, 1), HeadShard(2, 2, 1, 1)]),
    (9, 3, 2, [HeadShard(0, 6, 0, 2), HeadShard(6, 3, 2, 1)]),  # uneven: whole KV groups per rank
    (4, 4, 3, [HeadShard(0, 2, 0, 2), HeadShard(2, 1, 2, 1), HeadShard(3, 1, 3, 1)]),
    (4, 1, 2, [HeadShard(0, 2, 0, 1), HeadShard(2, 2, 0, 1)]),  # one KV head, replicated
    (8, 2, 4, [HeadShard(0, 2, 0, 1), HeadShard(2, 2, 0, 1), HeadShard(4, 2, 1, 1), HeadShard(6, 2, 1, 1)]),
])
def test_shard_heads(heads, kv, size, want):
    got = [shard_heads(heads, kv, r, size) for r in range(size)]
    assert got == want
    group = heads // kv
    covered = sorted(h for s in got for h in range(s.q_start, s.q_start + s.num_heads))
    assert covered == list(range(heads))  # every query head on exactly one rank
    for s in got:  # ... next to the KV heads it reads
        assert s.num_heads % s.num_kv_heads == 0
        assert s.kv_start <= s.q_start // group and (s.q_start + s.num_heads - 1) // group < s.kv_start + s.num_kv_heads


@pytest.mark.parametrize(("heads", "kv", "size", "match"), [
    (4, 2, 3, "tensor parallel size 3"),  # 2 KV heads cannot go on 3 ranks
    (4, 1, 3, "tensor parallel size 3"),  # 4 query heads of the one group do not split in 3
    (6, 4, 2, "do not form groups"),
])
def test_shard_heads_refuses_what_does_not_split(heads, kv, size, match):
    with pytest.raises(ValueError, match=match):
        shard_heads(heads, kv, 0, size)


# -- linear layers ------------------------------------------------------------------------------


def test_tp1_layers_are_plain_and_equal():
    x = torch.randn(5, 8)
    w, b = torch.randn(6, 8), torch.randn(6)
    for layer in (ColumnParallelLinear(8, 6), RowParallelLinear(8, 6)):
        assert isinstance(layer, nn.Linear) and layer.tp_output is None
        _loaded(layer, weight=w, bias=b)
        torch.testing.assert_close(layer(x), nn.functional.linear(x, w, b), rtol=0, atol=0)


@pytest.mark.parametrize("size", [2, 3])
def test_column_parallel_concatenates_to_the_full_output(size):
    x, w, b = torch.randn(5, 8), torch.randn(7, 8), torch.randn(7)
    parts = [_loaded(ColumnParallelLinear(8, 7, rank=r, size=size), weight=w, bias=b) for r in range(size)]
    assert [p.weight.shape[0] for p in parts] == split_sizes(7, size)
    torch.testing.assert_close(torch.cat([p(x) for p in parts], -1), x @ w.T + b)


def test_merged_column_splits_each_part_and_loads_by_index():
    gate, up = torch.randn(5, 8), torch.randn(5, 8)
    for r, (start, count) in enumerate([(0, 3), (3, 2)]):
        layer = MergedColumnParallelLinear(8, [5, 5], rank=r, size=2)
        layer.weight_loader(layer.weight, up, 1)  # shards arrive in any order
        layer.weight_loader(layer.weight, gate, 0)
        torch.testing.assert_close(layer.weight, torch.cat([gate[start : start + count], up[start : start + count]]))
        fused = MergedColumnParallelLinear(8, [5, 5], rank=r, size=2)
        fused.weight_loader(fused.weight, torch.cat([gate, up]))  # an already fused tensor: no index
        torch.testing.assert_close(fused.weight, layer.weight)
    with pytest.raises(ValueError, match="2 shards given for 1"):
        ColumnParallelLinear(8, 4, shards=[(0, 2), (2, 2)])


@pytest.mark.parametrize(("heads", "kv", "size"), [(9, 3, 2), (4, 1, 2), (4, 4, 3), (4, 2, 1)])
def test_qkv_holds_its_heads_rows(heads, kv, size):
    d, hidden = 4, 8
    q, k, v = torch.randn(heads * d, hidden), torch.randn(kv * d, hidden), torch.randn(kv * d, hidden)
    bias = torch.randn((heads + 2 * kv) * d)
    for r in range(size):
        layer = QKVParallelLinear(hidden, d, heads, kv, bias=True, rank=r, size=size)
        s = layer.heads
        for name, part in zip("qkv", (q, k, v), strict=True):
            layer.weight_loader(layer.weight, part, name)
        layer.weight_loader(layer.bias, bias)  # fused q/k/v bias in one tensor
        qs, ks = slice(s.q_start * d, (s.q_start + s.num_heads) * d), slice(s.kv_start * d, (s.kv_start + s.num_kv_heads) * d)
        assert layer.weight.shape == (layer.q_size + 2 * layer.kv_size, hidden)
        assert layer.q_size == s.num_heads * d and layer.kv_size == s.num_kv_heads * d
        torch.testing.assert_close(layer.weight, torch.cat([q[qs], k[ks], v[ks]]))
        bq, bk, bv = bias.split([heads * d, kv * d, kv * d])
        torch.testing.assert_close(layer.bias, torch.cat([bq[qs], bk[ks], bv[ks]]))


def test_row_parallel_sums_to_the_full_output_with_the_bias_once():
    x, w, b = torch.randn(5, 7), torch.randn(6, 7), torch.randn(6)
    parts = [_loaded(RowParallelLinear(7, 6, rank=r, size=3), weight=w, bias=b) for r in range(3)]
    assert [p.weight.shape[1] for p in parts] == [3, 2, 2] and all(p.tp_output is not None for p in parts)
    assert parts[0].bias.abs().sum() > 0 and all(p.bias.abs().sum() == 0 for p in parts[1:])
    starts = [0, 3, 5]
    total = sum(p(x[:, s : s + p.in_features]) for p, s in zip(parts, starts, strict=True))
    torch.testing.assert_close(total, x @ w.T + b)


def test_row_parallel_local_in_follows_the_heads():
    """o_proj after 9 heads / 3 KV heads on 2 ranks: rank 0 reads heads 0-5, rank 1 heads 6-8."""
    d, hidden = 4, 8
    x, w = torch.randn(3, 9 * d), torch.randn(hidden, 9 * d)
    total = torch.zeros(3, hidden)
    for r in range(2):
        s = shard_heads(9, 3, r, 2)
        cols = (s.q_start * d, s.num_heads * d)
        layer = _loaded(RowParallelLinear(9 * d, hidden, bias=False, rank=r, size=2, local_in=cols), weight=w)
        total += layer(x[:, cols[0] : cols[0] + cols[1]])
    torch.testing.assert_close(total, x @ w.T)


def test_gated_mlp_splits_gate_up_and_down():
    x = torch.randn(4, 8)
    full = GatedMLP(8, 7)
    assert isinstance(full.gate_up_proj, nn.Linear) and full.gate_up_proj.weight.shape == (14, 8)
    nn.init.normal_(full.gate_up_proj.weight)
    nn.init.normal_(full.down_proj.weight)
    total = torch.zeros(4, 8)
    for r in range(2):
        mlp = GatedMLP(8, 7, rank=r, size=2)
        gate, up = full.gate_up_proj.weight.detach().chunk(2)
        mlp.gate_up_proj.weight_loader(mlp.gate_up_proj.weight, gate, 0)
        mlp.gate_up_proj.weight_loader(mlp.gate_up_proj.weight, up, 1)
        mlp.down_proj.weight_loader(mlp.down_proj.weight, full.down_proj.weight.detach())
        total += mlp(x)
    torch.testing.assert_close(total, full(x))


# -- vocabulary -------------------------------------------------------------------------------------


def test_vocab_parallel_embedding_sums_to_the_full_lookup():
    table, ids = torch.randn(259, 6), torch.tensor([0, 86, 87, 172, 173, 258, 5])
    parts = [_loaded(VocabParallelEmbedding(259, 6, rank=r, size=3), weight=table) for r in range(3)]
    assert [p.weight.shape[0] for p in parts] == [87, 86, 86]
    torch.testing.assert_close(sum(p(ids) for p in parts), table[ids])
    single = _loaded(VocabParallelEmbedding(259, 6), weight=table)
    torch.testing.assert_close(single(ids), table[ids], rtol=0, atol=0)


def test_parallel_lm_head_concatenates_and_ties():
    h, w = torch.randn(3, 6), torch.randn(259, 6)
    heads = [_loaded(ParallelLMHead(6, 259, rank=r, size=2), weight=w) for r in range(2)]
    torch.testing.assert_close(torch.cat([p(h) for p in heads], -1), h @ w.T)
    emb = _loaded(VocabParallelEmbedding(259, 6, rank=1, size=2), weight=w)
    tied = ParallelLMHead(6, 259, rank=1, size=2)
    tied.tie(emb)
    assert tied.weight is emb.weight and tied.vocab_start == emb.vocab_start == 130


def test_a_kernel_replacement_keeps_the_collective():
    """A kernel that swaps the module keeps the row-parallel all-reduce around it (ParallelOutput)."""
    model = nn.Sequential(RowParallelLinear(8, 4, rank=0, size=2), ColumnParallelLinear(4, 4, rank=0, size=2))
    kernel = registry("linear_kernels").load("int4")()
    assert apply_linear_kernel(model, kernel) == 2
    assert isinstance(model[0], ParallelOutput) and not isinstance(model[1], ParallelOutput)
