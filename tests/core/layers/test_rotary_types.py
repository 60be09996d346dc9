"""Building blocks the Gemma and Phi-3 plugins need, checked against transformers' own code:
GemmaRMSNorm, LayerNorm, the HF activation names, LongRoPE and per-layer-type rope settings."""

from __future__ import annotations

import pytest
import torch

from heron.layers import (
    GatedMLP,
    GeluAndMul,
    GemmaRMSNorm,
    LayerNorm,
    get_act_fn,
    get_rope,
    rope_parameters,
)
from heron.layers.activation import ACT_FNS
from tests.helpers_model import make_batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemma_rmsnorm_matches_transformers(dtype):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    ours, theirs = GemmaRMSNorm(32, 1e-6), Gemma3RMSNorm(32, 1e-6)
    with torch.no_grad():
        ours.weight.normal_(0, 0.3)
        theirs.weight.copy_(ours.weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (torch.randn(5, 3, 32) * 4).to(dtype)
    got = ours(x)
    assert got.dtype == dtype
    torch.testing.assert_close(got, theirs(x), rtol=0, atol=0)


def test_layernorm_has_bias_and_matches_torch():
    norm = LayerNorm(16, eps=1e-5)
    assert norm.bias is not None and LayerNorm(16, bias=False).bias is None
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(4, 16)
    torch.testing.assert_close(norm(x), torch.nn.functional.layer_norm(x, (16,), norm.weight, norm.bias, 1e-5))


@pytest.mark.parametrize("name", sorted(ACT_FNS))
def test_activations_match_transformers(name):
    from transformers.activations import ACT2FN

    x = torch.linspace(-6, 6, 241)
    torch.testing.assert_close(get_act_fn(name)(x), ACT2FN[name](x), rtol=0, atol=1e-6)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unsupported activation 'gelu_made_up'; heron supports .*silu"):
        get_act_fn("gelu_made_up")


def test_gelu_and_mul_and_gated_mlp_activation():
    x = torch.randn(3, 2, 10)
    gate, up = x.chunk(2, dim=-1)
    gelu_tanh = torch.nn.functional.gelu(gate, approximate="tanh")
    torch.testing.assert_close(GeluAndMul()(x), gelu_tanh * up)
    torch.testing.assert_close(GeluAndMul("none")(x), torch.nn.functional.gelu(gate) * up)
    mlp = GatedMLP(8, 12, activation="gelu_pytorch_tanh")
    h = torch.randn(3, 8)
    g, u = mlp.gate_up_proj.weight[:12], mlp.gate_up_proj.weight[12:]
    want = mlp.down_proj(torch.nn.functional.gelu(h @ g.T, approximate="tanh") * (h @ u.T))
    torch.testing.assert_close(mlp(h), want)


def phi3_longrope_config(partial: float = 1.0):
    from transformers import Phi3Config

    dims = int(16 * partial) // 2
    rope = {
        "rope_type": "longrope",
        "rope_theta": 5000.0,
        "short_factor": [1.0 + 0.1 * i for i in range(dims)],
        "long_factor": [2.0 + i for i in range(dims)],
        "partial_rotary_factor": partial,
    }
    return Phi3Config(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                      original_max_position_embeddings=16, rope_parameters=rope, pad_token_id=0)


@pytest.mark.parametrize("partial", [1.0, 0.5])
def test_longrope_factors_and_scaling_match_transformers(partial):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = phi3_longrope_config(partial)
    rope = get_rope(cfg, 16)
    short, scaling = ROPE_INIT_FUNCTIONS["longrope"](cfg, "cpu")
    long, _ = ROPE_INIT_FUNCTIONS["longrope"](cfg, "cpu", seq_len=17)
    assert rope.rotary_dim == int(16 * partial)
    torch.testing.assert_close(rope.inv_freq, short, rtol=1e-6, atol=0)
    torch.testing.assert_close(rope.long_inv_freq, long, rtol=1e-6, atol=0)
    assert rope.attention_scaling == pytest.approx(scaling) and scaling > 1.0


def test_longrope_picks_factors_per_request_by_length():
    cfg = phi3_longrope_config()
    rope = get_rope(cfg, 16)
    # request 0 reaches 17 tokens (> 16: long), request 1 only 16 (short), in the same step
    batch = make_batch([2, 3], [17, 16], [[0, 1, 2, 3, 4], [5, 6, 7, 8]], 4)
    positions = torch.tensor([15, 16, 13, 14, 15])
    cos, sin = rope(positions, batch)
    pos = positions.float()[:, None]
    for rows, inv in ((slice(0, 2), rope.long_inv_freq), (slice(2, 5), rope.inv_freq)):
        emb = torch.cat((pos[rows] * inv, pos[rows] * inv), dim=-1)
        torch.testing.assert_close(cos[rows], emb.cos() * rope.attention_scaling)
        torch.testing.assert_close(sin[rows], emb.sin() * rope.attention_scaling)
    # without a batch the longest position decides, as transformers' forward does
    pos = torch.tensor([[3.0], [15.0]])
    for last, inv in ((16, rope.long_inv_freq), (15, rope.inv_freq)):
        emb = torch.cat((pos * inv,) * 2, dim=-1)
        got = rope(torch.tensor([3, 15, last]))[0][:2]
        torch.testing.assert_close(got, emb.cos() * rope.attention_scaling)


def test_rope_per_layer_type_matches_gemma3():
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    cfg = Gemma3TextConfig(
        hidden_size=64, head_dim=16, num_attention_heads=4, num_hidden_layers=6, max_position_embeddings=64,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
    )
    theirs = Gemma3RotaryEmbedding(cfg)
    positions = torch.tensor([0, 3, 17, 40])
    x = torch.zeros(1, dtype=torch.float32)
    for layer_type in ("sliding_attention", "full_attention"):
        ours = get_rope(cfg, 16, layer_type)
        want_cos, want_sin = theirs(x, positions[None], layer_type)
        cos, sin = ours(positions)
        torch.testing.assert_close(cos, want_cos[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(sin, want_sin[0], rtol=0, atol=1e-6)
    assert rope_parameters(cfg, "sliding_attention")["rope_theta"] == 100.0
    assert rope_parameters(cfg)["rope_type"] == "linear"  # no layer type: the global (full) settings
    with pytest.raises(ValueError, match="no rope parameters for layer type 'chunked_attention'"):
        rope_parameters(cfg, "chunked_attention")


def test_flat_rope_parameters_ignore_the_layer_type():
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 7.0})
    assert rope_parameters(cfg, "sliding_attention") == rope_parameters(cfg) == {"rope_type": "default",
                                                                                 "rope_theta": 7.0}
