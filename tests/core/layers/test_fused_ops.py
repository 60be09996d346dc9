"""heron.layers.fused_ops: the C++ ops equal the torch formulas (bit for bit in bf16), the fallbacks run
where the ops do not apply, and the cos/sin cache and the sampler's greedy fast path change no result.

Batch invariance: a row's result is the same bits however many rows share the call and whatever the
thread count, and an engine with the ops on answers a prompt the same whole, chunked or prefix-cached
(with the eager attention backend: the decode-only paths of torch_sdpa and cpu_paged compute a 1-token
step with other math than a prefill, whatever the norms do).
"""

from __future__ import annotations

import pytest
import torch

from heron.engine.sampler import Sampler
from heron.engine.sampling_params import SamplingParams
from heron.layers import RMSNorm, RotaryEmbedding, rotary_tables, rotate_heads
from heron.layers.fused_ops import (
    add_rms_norm,
    argmax_rows,
    fused_available,
    load_fused_ops,
    rms_norm,
    rotate_heads_fused,
)
from heron.plugins import registry
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
    """The ops are on unless HERON_FUSED_OPS=0: switched on for this module whatever the environment says."""
    import os

    from heron.layers import fused_ops

    before = os.environ.get("HERON_FUSED_OPS")
    os.environ["HERON_FUSED_OPS"] = "1"
    fused_ops._EXT.reset()
    need(fused_available(), "heron's fused C++ ops need a C++ compiler (torch.utils.cpp_extension)")
    yield
    if before is None:
        os.environ.pop("HERON_FUSED_OPS", None)
    else:
        os.environ["HERON_FUSED_OPS"] = before
    fused_ops._EXT.reset()


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_fallback_rounds_as_the_kernel(dtype: torch.dtype) -> None:
    """The torch formula (autograd on) casts before the weight as the kernel does: same bf16 bits."""
    torch.manual_seed(1)
    x, w = torch.randn(64, 576, dtype=dtype) * 2, torch.randn(576, dtype=dtype)
    with torch.inference_mode():
        fused = rms_norm(x, w, 1e-5)
    fallback = rms_norm(x, w.requires_grad_(), 1e-5).detach()
    assert torch.equal(fallback, _hf_norm(x, w.detach(), 1e-5))
    if dtype == torch.bfloat16:
        assert torch.equal(fused, fallback)
    else:
        torch.testing.assert_close(fused, fallback, atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_argmax_rows_equals_torch_argmax(dtype: torch.dtype, threads: int) -> None:
    """First maximum per row, as torch: ties, +-inf, NaN (above all: the first one), every length around
    the kernel's 64-value steps and tail, rows of a wider tensor, 0 rows; and the C++ op really ran."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(threads)
        checked = 0
        for rows in (0, 1, 5, 17, 64):
            for vocab in (1, 2, 15, 16, 63, 64, 65, 127, 128, 1000, 49152, 49155):
                wide = torch.randn(rows, vocab + 3).to(dtype)
                if rows >= 5 and vocab > 3:
                    wide[0, vocab // 2] = float("nan")  # NaN beats everything
                    wide[1, [vocab // 3, vocab - 1]] = wide[1].max() + 1  # a tie: the first wins
                    wide[2, : vocab + 3] = 1.0  # all equal: index 0
                    wide[3, : vocab + 3] = float("-inf")
                    wide[4, [1, vocab - 1]] = float("inf")
                    wide[4, vocab - 2] = float("nan")  # the NaN after a +inf still wins
                for x in (wide[:, :vocab], wide[:, :vocab].contiguous()):
                    got = argmax_rows(x)
                    assert got.dtype == torch.int64 and torch.equal(got, x.argmax(dim=-1)), (rows, vocab)
                    assert torch.equal(load_fused_ops().argmax_rows(x), got)  # not the fallback
                    checked += 1
        assert checked == 2 * 5 * 12
    finally:
        torch.set_num_threads(before)


def test_argmax_rows_falls_back_for_what_the_op_does_not_take() -> None:
    for x in (torch.randn(3, 40, dtype=torch.float64), torch.randn(40), torch.randn(40, 3).t(),
              torch.randn(3, 40, requires_grad=True)):
        assert torch.equal(argmax_rows(x), x.argmax(dim=-1))


# -- batch invariance --------------------------------------------------------------------------------

#: row counts of a call: every one up to 64 (odd ones included), then past the threads' grain of 64 rows
ROW_COUNTS = (*range(1, 65), 97, 130)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request: pytest.FixtureRequest):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _invariant(op, rows: torch.Tensor) -> None:
    """``op(rows[:t])`` equals, bit for bit, ``op`` of each of those rows alone, for every t in ROW_COUNTS."""
    alone = torch.cat([op(rows[i : i + 1]) for i in range(rows.shape[0])])
    for t in ROW_COUNTS:
        got = op(rows[:t])
        bad = [i for i in range(t) if not torch.equal(got[i], alone[i])]
        assert not bad, f"{t} rows: rows {bad[:8]} differ from the same rows computed alone"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [576, 203])  # SmolLM2's width, and one that is no multiple of the lanes
def test_norms_are_batch_invariant(dtype: torch.dtype, hidden: int, threads: int) -> None:
    torch.manual_seed(hidden)
    n = max(ROW_COUNTS)
    wide = torch.randn(n, hidden + 24, dtype=dtype) * 3  # x: strided rows, as a slice of a projection
    x, res, w = wide[:, :hidden], torch.randn(n, hidden, dtype=dtype), torch.randn(hidden, dtype=dtype)
    with torch.inference_mode():
        _invariant(lambda r: rms_norm(r, w, 1e-5), x)
        # add_rms_norm's two outputs side by side: [t, 2 * hidden]
        both = torch.cat((x, res), dim=-1)
        _invariant(lambda r: torch.cat(add_rms_norm(r[:, :hidden], r[:, hidden:], w, 1e-5), dim=-1), both)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rd", [64, 32])
def test_rotate_heads_is_batch_invariant(dtype: torch.dtype, rd: int, threads: int) -> None:
    torch.manual_seed(rd)
    n = max(ROW_COUNTS)
    qkv = torch.randn(n, (9 + 3 + 3) * 64, dtype=dtype)
    rope = RotaryEmbedding(rd, 10000.0, 256)
    tables = rotary_tables(*rope(torch.arange(n) * 3 % 200), dtype)
    # one [T, 2 * rd + heads * 64] row carries a token's cos, sin and q/k heads
    packed = torch.cat((tables.cos[:, 0], tables.sin[:, 0], qkv[:, : 12 * 64]), dim=-1)

    def rotate(r: torch.Tensor) -> torch.Tensor:
        cos, sin = r[:, None, :rd].contiguous(), r[:, None, rd : 2 * rd].contiguous()
        out = rotate_heads_fused(r[:, 2 * rd :].view(r.shape[0], 12, 64), cos, sin)
        assert out is not None
        return out

    with torch.inference_mode():
        _invariant(rotate, packed)


def _engine_answers(path, **config) -> list[tuple[int, list[int], list[float]]]:
    """(cached prompt tokens, tokens, first token's top-5 logprobs) of one prompt sent three times, bf16, oneDNN."""
    from heron import LLM, SamplingParams

    llm = LLM(str(path), dtype="bfloat16", linear_kernel="onednn", attention_backend="eager", **config)
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5)
    prompt = {"prompt_token_ids": [(7 * i + 3) % 250 + 1 for i in range(41)]}  # 2 full blocks + 9
    answers = []
    for _ in range(3):
        result = llm.generate([prompt], params, use_tqdm=False)[0]
        out = result.outputs[0]
        first = sorted(lp.logprob for lp in out.logprobs[0].values())
        answers.append((result.num_cached_tokens, list(out.token_ids), first))
    return answers


def test_engine_answers_alike_whole_chunked_and_prefix_cached(tmp_path) -> None:
    """bf16, oneDNN linears, fused ops on: a prompt prefilled whole, by 16-token chunks, or (sent again)
    from the prefix cache plus its last 9 tokens gets the same tokens and the same logprobs, bit for bit."""
    from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

    onednn = registry("linear_kernels").load("onednn")
    need(onednn.supports(torch.device("cpu"), torch.bfloat16) is None, "oneDNN bf16 linears need a bf16 CPU")
    tiny_checkpoint(tiny_config("llama", hidden_size=128, intermediate_size=352), tmp_path)
    save_tiny_tokenizer(tmp_path)
    assert fused_available()
    cached = _engine_answers(tmp_path, enable_prefix_caching=True)
    chunked = _engine_answers(tmp_path, enable_prefix_caching=False, max_num_batched_tokens=16, max_num_seqs=4)
    assert [a[0] for a in cached] == [0, 32, 32] and [a[0] for a in chunked] == [0, 0, 0]
    answers = [a[1:] for a in cached + chunked]  # whole, twice from the cache, three times by chunks
    assert all(a == answers[0] for a in answers[1:]), answers


def test_the_ops_are_on_by_default_and_off_with_the_variable() -> None:
    import os
    import subprocess
    import sys

    check = "from heron.layers.fused_ops import fused_available; print(fused_available())"
    env = {k: v for k, v in os.environ.items() if k != "HERON_FUSED_OPS"}
    runs = [subprocess.run([sys.executable, "-c", check], env={**env, **extra}, capture_output=True, text=True,
                           timeout=600, check=True).stdout.split()[-1] for extra in ({}, {"HERON_FUSED_OPS": "0"})]
    assert runs == ["True", "False"]
