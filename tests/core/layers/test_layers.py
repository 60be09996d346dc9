"""Norm, MLP, the Attention layer's plumbing, KV-cache binding and backend selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heron.layers import (
    Attention,
    GatedMLP,
    RMSNorm,
    UnsupportedBackendError,
    allocate_kv_caches,
    backend_preference,
    select_attention_backend,
)
from heron.plugins import UnknownPluginError, registry


def test_rmsnorm_matches_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    ours, theirs = RMSNorm(32, 1e-5), LlamaRMSNorm(32, 1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    x = torch.randn(5, 32)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x.bfloat16()).dtype == torch.float32  # fp32 weight promotes, like transformers


def test_gated_mlp():
    mlp = GatedMLP(8, 12)
    x = torch.randn(3, 8)
    gate, up = mlp.gate_up_proj.weight[:12], mlp.gate_up_proj.weight[12:]
    want = mlp.down_proj(torch.nn.functional.silu(x @ gate.T) * (x @ up.T))
    torch.testing.assert_close(mlp(x), want)


class Recorder:
    """A stand-in backend that records what the layer hands it."""

    name = "recorder"

    def forward(self, q, k, v, kv_cache, metadata, layer):
        self.seen = (q.shape, k.shape, v.shape, kv_cache, metadata, layer)
        return q * 2


class TwoLayers(nn.Module):
    def __init__(self, backend):
        super().__init__()
        # registered out of order: caches must follow layer_idx
        self.b = Attention(4, 2, 8, 0.5, layer_idx=1, backend=backend)
        self.a = Attention(4, 1, 16, 0.5, layer_idx=0, backend=backend, sliding_window=3)


def test_attention_layer_reshapes_and_calls_the_backend():
    from tests.helpers_model import make_batch

    backend = Recorder()
    model = TwoLayers(backend)
    eager = registry("attention_backends").load("eager")
    caches = allocate_kv_caches(model, eager, num_blocks=3, block_size=4, dtype=torch.float32, device="cpu")
    assert [c.shape for c in caches] == [(2, 3, 4, 1, 16), (2, 3, 4, 2, 8)]
    assert model.a.kv_cache is caches[0] and model.b.kv_cache is caches[1]
    batch = make_batch([5], [5], [[0, 1]], 4)
    batch.attn_metadata = "meta"
    q = torch.randn(5, 32)
    out = model.b(q, torch.randn(5, 16), torch.randn(5, 16), batch)
    assert out.shape == (5, 32) and torch.equal(out, q * 2)
    shapes_q, shapes_k, _, cache, meta, layer = backend.seen
    assert (shapes_q, shapes_k, cache, meta, layer) == ((5, 4, 8), (5, 2, 8), caches[1], "meta", model.b)


def test_attention_without_cache_says_how_to_fix():
    layer = Attention(2, 2, 4, 0.5, 7, Recorder())
    with pytest.raises(RuntimeError, match="allocate_kv_caches"):
        layer(torch.randn(1, 8), torch.randn(1, 8), torch.randn(1, 8), None)
    with pytest.raises(ValueError, match="multiple"):
        Attention(3, 2, 4, 0.5, 0, Recorder())


def test_auto_prefers_cpu_paged_then_torch_sdpa_and_eager_last():
    # the order comes from the priorities the built-ins declare, not from a list in core
    assert backend_preference(["eager", "zeta", "torch_sdpa", "alpha", "cpu_paged"]) == [
        "cpu_paged", "torch_sdpa", "eager"]
    cls, why = select_attention_backend("auto", "cpu", torch.float32, 64, None)
    assert cls.name == "cpu_paged" and "auto chose" in why  # its C++ kernel builds here (and in CI)
    cls, why = select_attention_backend("auto", "cpu", torch.float16, 64, None)
    assert cls.name == "torch_sdpa" and "float16" in why  # the kernel reads fp32/bf16 caches only
    cls, why = select_attention_backend("auto", "cpu", torch.float16, 64, 4096, logits_soft_cap=30.0)
    assert cls.name == "torch_sdpa" and "cpu_paged" in why  # says why the others were skipped


def test_explicit_backend_errors():
    cls, _ = select_attention_backend("eager", "cpu", torch.float32, 64, None)
    assert cls.name == "eager"
    with pytest.raises(UnsupportedBackendError, match="'torch_sdpa' cannot serve this model: .*alibi"):
        select_attention_backend("torch_sdpa", "cpu", torch.float32, 64, None, alibi=True)
    with pytest.raises(UnknownPluginError, match="Installed: .*eager"):
        select_attention_backend("flashy", "cpu", torch.float32, 64, None)
    with pytest.raises(UnsupportedBackendError, match="No installed attention backend"):
        select_attention_backend("auto", "cpu", torch.int8, 64, None)
