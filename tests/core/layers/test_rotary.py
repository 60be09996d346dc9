"""Rotary embeddings: inverse frequencies and attention scaling equal transformers' for every
rope type heron supports, and apply_rotary equals transformers' rotate-half."""

from __future__ import annotations

import pytest
import torch

from heron.layers import (
    ROPE_TYPES,
    RotaryEmbedding,
    apply_rotary,
    get_rope,
    rope_parameters,
    rotary_tables,
    rotate_heads,
)

PARAMS = {
    "default": {},
    "linear": {"factor": 4.0},
    "dynamic": {"factor": 2.0},
    "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 16},
    "longrope": {"short_factor": [1.0 + i / 16 for i in range(16)], "long_factor": [2.0 + i for i in range(16)],
                 "original_max_position_embeddings": 32},
}


def config(rope_type: str, **extra):
    from transformers import LlamaConfig

    rope = {"rope_type": rope_type, "rope_theta": 5000.0, **PARAMS[rope_type]}
    return LlamaConfig(hidden_size=128, num_attention_heads=4, max_position_embeddings=128, rope_parameters=rope, **extra)


@pytest.mark.parametrize("rope_type", ROPE_TYPES)
def test_inv_freq_and_scaling_match_transformers(rope_type):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = config(rope_type)
    rope = get_rope(cfg, 32)
    if rope_type == "default":
        want = 1.0 / (5000.0 ** (torch.arange(0, 32, 2).float() / 32))
        scaling = 1.0
    else:
        want, scaling = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu")
    torch.testing.assert_close(rope.inv_freq, want, rtol=1e-6, atol=0)
    assert rope.attention_scaling == pytest.approx(scaling)


def test_dynamic_grows_the_base_past_max_positions():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = config("dynamic")
    rope = get_rope(cfg, 32)
    want, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, "cpu", seq_len=300)
    torch.testing.assert_close(rope._dynamic_inv_freq(torch.tensor([300]))[0], want, rtol=1e-6, atol=0)
    torch.testing.assert_close(rope._dynamic_inv_freq(torch.tensor([5]))[0], rope.inv_freq, rtol=1e-6, atol=0)


def test_apply_rotary_matches_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rope = RotaryEmbedding(16, 10000.0, 64)
    positions = torch.tensor([0, 1, 2, 7, 3])
    cos, sin = rope(positions)  # [T, 16]
    q, k = torch.randn(5, 4, 16), torch.randn(5, 2, 16)
    got_q, got_k = apply_rotary(q, k, cos, sin)
    # transformers wants [B, H, T, D] and cos/sin [B, T, D]
    want_q, want_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos[None], sin[None])
    torch.testing.assert_close(got_q, want_q[0].transpose(0, 1))
    torch.testing.assert_close(got_k, want_k[0].transpose(0, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rotary_dim", [16, 8])
def test_rotate_heads_is_apply_rotary_bit_for_bit(dtype, rotary_dim):
    rope = RotaryEmbedding(rotary_dim, 10000.0, 64)
    cos, sin = rope(torch.tensor([0, 5, 9, 63]))
    q, k = torch.randn(4, 4, 16).to(dtype), torch.randn(4, 2, 16).to(dtype)
    want_q, want_k = apply_rotary(q, k, cos, sin)
    got = rotate_heads(torch.cat((q, k), dim=1), rotary_tables(cos, sin, dtype))
    assert got.dtype == dtype
    assert torch.equal(got[:, :4], want_q) and torch.equal(got[:, 4:], want_k)


def test_partial_rotary_leaves_the_rest():
    rope = RotaryEmbedding(8, 10000.0, 64)
    cos, sin = rope(torch.tensor([3, 4]))
    q, k = torch.randn(2, 2, 16), torch.randn(2, 1, 16)
    got_q, got_k = apply_rotary(q, k, cos, sin)
    assert torch.equal(got_q[..., 8:], q[..., 8:]) and torch.equal(got_k[..., 8:], k[..., 8:])
    assert not torch.allclose(got_q[..., :8], q[..., :8])


def test_legacy_rope_scaling_and_unknown_type():
    from types import SimpleNamespace

    legacy = SimpleNamespace(rope_scaling={"type": "linear", "factor": 2.0}, rope_theta=500.0)
    assert rope_parameters(legacy) == {"type": "linear", "factor": 2.0, "rope_theta": 500.0, "rope_type": "linear"}
    with pytest.raises(ValueError, match="Unsupported rope type 'made_up'"):
        RotaryEmbedding(16, 10000.0, 64, "made_up")
