"""``cpu_paged``'s C++ attention kernel computes what ``torch_sdpa`` computes, straight off the cache.

The kernel is built here, not skipped: a machine with a compiler (local and CI) must build it, so a
build error fails these tests with the compiler's message.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from heron.interfaces import ForwardBatch
from heron_plugins.kernels import cpu_paged
from heron_plugins.kernels.cpu_paged import CpuPagedBackend, load_extension
from heron_plugins.kernels.torch_sdpa import TorchSDPABackend
from tests.helpers_model import VOCAB, PagedRunner, make_batch, tiny_checkpoint, tiny_config

CPU = torch.device("cpu")
BS = 16


def layer(h: int, hkv: int, d: int, window: int | None) -> SimpleNamespace:
    return SimpleNamespace(layer_idx=0, num_heads=h, num_kv_heads=hkv, head_size=d, scale=d**-0.5,
                           sliding_window=window, logits_soft_cap=None)


def decode_step(
    r: int, h: int, hkv: int, d: int, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, ForwardBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random cache (scattered, non-contiguous block tables) and one decode step over it.

    Returns (cache, batch, q, k, v); q is a strided view like the model's fused qkv output.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    seq_lens = [rng.randint(1, 300) for _ in range(r)]
    if r > 1:
        seq_lens[0] = 1  # a request whose only token is the new one
    need = [-(-s // BS) for s in seq_lens]
    num_blocks = sum(need) + 7
    free = list(range(num_blocks))
    rng.shuffle(free)
    tables = [[free.pop() for _ in range(n)] for n in need]
    batch = make_batch([1] * r, seq_lens, tables, BS)
    cache = torch.randn(TorchSDPABackend.kv_cache_shape(num_blocks, BS, hkv, d)).to(dtype)
    qkv = torch.randn(r, (h + 2 * hkv) * d).to(dtype)
    q = qkv[:, : h * d].view(r, h, d)
    k = qkv[:, h * d : (h + hkv) * d].view(r, hkv, d)
    v = qkv[:, (h + hkv) * d :].view(r, hkv, d)
    return cache, batch, q, k, v


def run(backend_cls: type[TorchSDPABackend], cache: torch.Tensor, batch: ForwardBatch, q: torch.Tensor,
        k: torch.Tensor, v: torch.Tensor, info: SimpleNamespace) -> torch.Tensor:
    backend = backend_cls()
    batch.attn_metadata = backend.build_batch(batch)
    return backend.forward(q, k, v, cache, batch.attn_metadata, info)


def test_extension_builds_and_is_supported():
    assert hasattr(load_extension(), "paged_attention")  # raises the compiler's error if the build fails
    for dtype in (torch.float32, torch.bfloat16):
        assert CpuPagedBackend.supports(CPU, dtype, 64, 4096) is None


def test_supports_reasons(monkeypatch):
    assert CpuPagedBackend.supports(CPU, torch.float32, 64, logits_soft_cap=30.0) is None  # capped decodes use torch
    assert "CPU only" in CpuPagedBackend.supports(torch.device("cuda"), torch.float32, 64)
    assert "float16" in CpuPagedBackend.supports(CPU, torch.float16, 64)
    assert "floating point" in CpuPagedBackend.supports(CPU, torch.int8, 64)
    assert "alibi" in CpuPagedBackend.supports(CPU, torch.float32, 64, alibi=True)
    monkeypatch.setattr(cpu_paged._EXT, "module", None)
    monkeypatch.setattr(cpu_paged._EXT, "error", RuntimeError("Error building extension: boom\ndetails"))
    assert CpuPagedBackend.supports(CPU, torch.float32, 64) == (
        "cpu_paged could not build its C++ kernel: Error building extension: boom"
    )


# SmolLM2's heads; the tiny test models'; head size 128 (the kernel unrolls 64 and 128)
SHAPES = [(9, 3, 64), (4, 2, 8), (8, 2, 128)]
SHAPE_IDS = ["9x3x64", "4x2x8", "8x2x128"]


@pytest.mark.parametrize("window", [None, 40])
@pytest.mark.parametrize(("h", "hkv", "d"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("r", [1, 5, 37])
def test_float32_decode_matches_torch_sdpa(r, h, hkv, d, window):
    cache, batch, q, k, v = decode_step(r, h, hkv, d, torch.float32, seed=r)
    info = layer(h, hkv, d, window)
    want_cache = cache.clone()
    want = run(TorchSDPABackend, want_cache, batch, q, k, v, info)
    got = run(CpuPagedBackend, cache, batch, q, k, v, info)
    assert got.shape == (r, h, d) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(cache, want_cache)  # the new K/V were written where torch_sdpa writes them


@pytest.mark.parametrize("window", [None, 40])
@pytest.mark.parametrize(("h", "hkv", "d"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("r", [1, 5, 37])
def test_bfloat16_decode_matches_float32_reference(r, h, hkv, d, window):
    cache, batch, q, k, v = decode_step(r, h, hkv, d, torch.bfloat16, seed=100 + r)
    info = layer(h, hkv, d, window)
    ref_cache = cache.float()  # the same bf16 values, attended in float32
    want = run(TorchSDPABackend, ref_cache, batch, q.float(), k.float(), v.float(), info)
    got = run(CpuPagedBackend, cache, batch, q, k, v, info)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
    assert torch.equal(cache, ref_cache.to(torch.bfloat16))


def test_query_with_strided_head_dim():
    cache, batch, q, k, v = decode_step(5, 4, 2, 8, torch.float32, seed=7)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, last stride != 1
    info = layer(4, 2, 8, None)
    want = run(TorchSDPABackend, cache.clone(), batch, q, k, v, info)
    torch.testing.assert_close(run(CpuPagedBackend, cache, batch, q, k, v, info), want, rtol=1e-5, atol=1e-5)


def chunk_step(q_lens: list[int], seq_lens: list[int], h: int, hkv: int, d: int, seed: int):
    """A random scattered cache and one step of chunks: (cache, batch, q, k, v), float32."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    need = [-(-s // BS) for s in seq_lens]
    free = list(range(sum(need) + 5))
    rng.shuffle(free)
    batch = make_batch(q_lens, seq_lens, [[free.pop() for _ in range(n)] for n in need], BS)
    cache = torch.randn(TorchSDPABackend.kv_cache_shape(sum(need) + 5, BS, hkv, d))
    t = sum(q_lens)
    return cache, batch, torch.randn(t, h, d), torch.randn(t, hkv, d), torch.randn(t, hkv, d)


@pytest.mark.parametrize("window", [None, 40])
@pytest.mark.parametrize(("h", "hkv", "d"), SHAPES, ids=SHAPE_IDS)
def test_chunks_match_torch_sdpa(h, hkv, d, window):
    """Speculative 1 + k chunks, short and long prompt chunks over a cached history, a prompt from
    scratch and decodes, in one step: every row is computed as a decode at its own position."""
    rng = random.Random(3)
    q_lens = [5, 1, 3, 16, 37, 2, 70]
    seq_lens = [rng.randint(q, 300) for q in q_lens]
    seq_lens[-2] = q_lens[-2]  # prompts from scratch
    seq_lens[-1] = q_lens[-1]
    cache, batch, q, k, v = chunk_step(q_lens, seq_lens, h, hkv, d, seed=3)
    info = layer(h, hkv, d, window)
    want = run(TorchSDPABackend, cache.clone(), batch, q, k, v, info)
    backend = CpuPagedBackend()
    md = backend.build_batch(batch)
    assert md.seq_lens.tolist() == seq_lens and md.q_start.tolist() == [0, *itertools.accumulate(q_lens)]
    got = backend.forward(q, k, v, cache, md, info)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window", [None, 40])
def test_a_row_is_the_same_bits_however_its_prompt_is_split(dtype, window):
    """A prompt's attention computed whole, in chunks (as chunked prefill and a prefix-cache hit
    compute it) and one token at a time gives identical bits, alone or batched with others."""
    h, hkv, d, n = 9, 3, 64, 83
    torch.manual_seed(11)
    q, k, v = (torch.randn(n, heads, d).to(dtype) for heads in (h, hkv, hkv))
    other_q, other_k, other_v = (torch.randn(7, heads, d).to(dtype) for heads in (h, hkv, hkv))
    info = layer(h, hkv, d, window)
    table = list(range(-(-n // BS)))
    other_table = [len(table) + i for i in range(2)]  # a second request of 7 prompt tokens
    num_blocks = len(table) + len(other_table)

    def attend(splits: list[int], with_other: bool) -> torch.Tensor:
        cache = torch.zeros(TorchSDPABackend.kv_cache_shape(num_blocks, BS, hkv, d), dtype=dtype)
        outs, done = [], 0
        for size in splits:
            q_lens, seq_lens, tables = [size], [done + size], [table]
            rows = slice(done, done + size)
            qs, ks, vs = [q[rows]], [k[rows]], [v[rows]]
            if with_other and done == 0:
                q_lens, seq_lens, tables = [7, size], [7, size], [other_table, table]
                qs, ks, vs = [other_q, *qs], [other_k, *ks], [other_v, *vs]
            batch = make_batch(q_lens, seq_lens, tables, BS)
            out = run(CpuPagedBackend, cache, batch, torch.cat(qs), torch.cat(ks), torch.cat(vs), info)
            outs.append(out[-size:])
            done += size
        return torch.cat(outs)

    whole = attend([n], with_other=False)
    assert torch.equal(attend([n], with_other=True), whole)
    assert torch.equal(attend([40, 27, 16], with_other=True), whole)  # chunked prefill
    assert torch.equal(attend([80, 3], with_other=False), whole)  # a prefix-cache hit's remainder
    assert torch.equal(attend([1] * n, with_other=False), whole)  # decodes


# request -> new tokens per step: prefills, a chunk mixed with decodes, then decode-only steps
PLAN = [{"a": 9, "b": 6, "c": 3}, {"a": 1, "b": 1, "c": 4}] + [{"a": 1, "b": 1, "c": 1}] * 4


@pytest.mark.parametrize(("kind", "overrides"), [("llama", {}), ("mistral", {"sliding_window": 5})],
                         ids=["llama", "mistral-window"])
def test_tiny_model_logits_match_torch_sdpa(tmp_path: Path, kind, overrides):
    tiny_checkpoint(tiny_config(kind, **overrides), tmp_path)
    runners = {name: PagedRunner.load(tmp_path, name) for name in ("torch_sdpa", "cpu_paged")}
    rng = random.Random(0)
    for step in PLAN:
        new = {rid: [rng.randrange(VOCAB) for _ in range(n)] for rid, n in step.items()}
        want, got = (runners[name].step(new) for name in ("torch_sdpa", "cpu_paged"))
        for rid in new:
            torch.testing.assert_close(got[rid], want[rid], rtol=0, atol=1e-5)
