"""heron.layers.fused_ops: the C++ ops equal the torch formulas (bit for bit in bf16), the fallbacks run
where the ops do not apply, and the cos/sin cache and the sampler's greedy fast path change no result."""

from __future__ import annotations

import pytest
import torch

from heron.engine.sampler import Sampler
from heron.engine.sampling_params import SamplingParams
from heron.layers import RMSNorm, RotaryEmbedding, rotary_tables, rotate_heads
from heron.layers.fused_ops import add_rms_norm, fused_available, rms_norm, rotate_heads_fused
from tests.conftest import need
from tests.core.engine.fakes import make_seq

DTYPES = (torch.float32, torch.bfloat16)


def _hf_norm(s: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    s32 = s.float()
    return w * (s32 * torch.rsqrt(s32.pow(2).mean(-1, keepdim=True) + eps)).to(s.dtype)


def _torch_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rd = cos.shape[-1]
    rot = x[..., :rd] * cos + x[..., :rd].roll(rd // 2, dims=-1) * sin
    return torch.cat((rot, x[..., rd:]), dim=-1)


@pytest.fixture(scope="module", autouse=True)
def _built():
    """The ops are opt-in (HERON_FUSED_OPS=1): switched on for this module, off again after it."""
    import os

    from heron.layers import fused_ops

    before = os.environ.get("HERON_FUSED_OPS")
    os.environ["HERON_FUSED_OPS"] = "1"
    fused_ops._ext, fused_ops._failed = None, False
    need(fused_available(), "heron's fused C++ ops need a C++ compiler (torch.utils.cpp_extension)")
    yield
    if before is None:
        os.environ.pop("HERON_FUSED_OPS", None)
    else:
        os.environ["HERON_FUSED_OPS"] = before
    fused_ops._ext, fused_ops._failed = None, False


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 5, 33])
def test_add_rms_norm_equals_add_then_norm(dtype: torch.dtype, rows: int) -> None:
    torch.manual_seed(rows)
    wide = torch.randn(rows, 80, dtype=dtype)
    x, res, w = wide[:, :72], torch.randn(rows, 72, dtype=dtype), torch.randn(72, dtype=dtype)  # x: strided rows
    with torch.inference_mode():
        y, s = add_rms_norm(x, res, w, 1e-5)
        plain = rms_norm(s, w, 1e-5)
    assert torch.equal(s, x + res)
    if dtype == torch.bfloat16:
        assert torch.equal(y, _hf_norm(x + res, w, 1e-5)) and torch.equal(plain, y)
    else:
        torch.testing.assert_close(y, _hf_norm(x + res, w, 1e-5), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain, y, atol=1e-6, rtol=1e-6)


def test_rmsnorm_module_with_residual_and_autograd_fallback() -> None:
    norm = RMSNorm(16, 1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 16))
    x, res = torch.randn(3, 16), torch.randn(3, 16)
    with torch.inference_mode():
        fused, summed = norm(x, res)
    eager, eager_sum = norm(x, res)  # grad enabled: the torch formula runs
    assert eager.requires_grad
    torch.testing.assert_close(fused, eager.detach(), atol=1e-6, rtol=1e-6)
    assert torch.equal(summed, eager_sum)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rd", [64, 32])
def test_rotate_heads_fused_is_bit_exact(dtype: torch.dtype, rd: int) -> None:
    torch.manual_seed(rd)
    qkv = torch.randn(7, (4 + 2 + 2) * 64, dtype=dtype)
    qk = qkv[:, : 6 * 64].view(7, 6, 64)  # q and k heads of a fused projection: strided rows
    rope = RotaryEmbedding(rd, 10000.0, 128)
    tables = rotary_tables(*rope(torch.arange(3, 10)), dtype)
    with torch.inference_mode():
        fused = rotate_heads_fused(qk, tables.cos, tables.sin)
        via_layer = rotate_heads(qk, tables)
    assert fused is not None and fused.is_contiguous()
    assert torch.equal(fused, _torch_rotate(qk, tables.cos, tables.sin))
    assert torch.equal(via_layer, fused)


def test_rotate_heads_fused_declines_what_it_cannot_take() -> None:
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    cos = torch.ones(2, 1, 8, dtype=torch.float64)
    with torch.inference_mode():
        assert rotate_heads_fused(x, cos, cos) is None


@pytest.mark.parametrize("rope_type, params", [
    ("default", {}),
    ("llama3", {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}),
    ("yarn", {"factor": 4.0, "original_max_position_embeddings": 64}),
])
def test_cached_cos_sin_equal_computed(rope_type: str, params: dict) -> None:
    rope = RotaryEmbedding(32, 10000.0, 256, rope_type, params)
    for positions in (torch.tensor([0, 1, 2]), torch.tensor([700, 5, 99])):  # the second grows the table
        cos, sin = rope(positions)
        ref_cos, ref_sin = rope._compute(positions, None)
        assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)
    assert len(rope._table) == 1 and rope._table[0].shape[0] == 1024


def test_greedy_fast_path_matches_the_full_sampler() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    greedy = [make_seq([1, 2], params=SamplingParams(temperature=0.0)) for _ in range(4)]
    fast = Sampler(50, [0])(logits, greedy)
    assert fast.token_ids == logits.argmax(-1).tolist()
    assert fast.logprobs == [None] * 4 and fast.sampled_logprobs == [None] * 4
    # one row asks for logprobs: the full path runs; greedy tokens are the same
    mixed = greedy[:3] + [make_seq([1, 2], params=SamplingParams(temperature=0.0, logprobs=1))]
    full = Sampler(50, [0])(logits, mixed)
    assert full.token_ids == fast.token_ids and full.logprobs[3] is not None
