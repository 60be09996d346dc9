"""``gguf_linear``'s AMX path (``isa="amx"``: bfloat16 x with ``T >= amx_min_t`` rows on the tile unit, and
every T for weights of ``amx_all_t_bytes`` or more).

On a CPU whose ``/proc/cpuinfo`` reports ``amx_tile`` and ``amx_bf16`` the path must be listed by
``gguf_ops.isas()`` (last, the default); a missing one fails under CI (``CI=true``) and is skipped
locally. On other CPUs it must not be listed, and the rest is skipped.

Checked for every type on odd shapes (N = 7, 33, 576 weight rows: tails of the 16-row tiles and
32-row passes; T = 1, 2, 5, 8, 16 on the few-token kernel, 17 and 40 on the many-token one: tails of
the 16-token tiles), with and
without bias: every output element within one bfloat16 ulp (of the larger of the sum and the
result, the bias being added after a first rounding) plus 1e-5 of the largest output, of a float64
matmul of the bfloat16 weights (gguf_ops.dequantize rounded to bfloat16). The tile unit sums in its
own order, so the path may differ from the row path in last bits, but an output element must be the
same bits whatever the other tokens and weight rows are, and where they sit in the tiles: prefixes
and shifted slices of x, and slices of the weight rows, give equal (``torch.equal``) outputs, on
either kernel. Below ``amx_min_t``, and for float32 x, "amx" is the ``avx512bf16`` row path bit for
bit, except for weights of ``amx_all_t_bytes`` or more (an LM head), which take the tile unit at every T.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from heron.interfaces import ForwardBatch, running_batch
from heron_plugins.kernels import gguf_ops
from heron_plugins.kernels.gguf_ops import QTYPES
from tests.conftest import need
from tests.plugins.kernels.test_gguf_ops import random_blocks

TYPES = tuple(sorted(QTYPES))
#: the float32 sums' error allowance, relative to the largest output
REL = 1e-5


def _cpu_reports_amx() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_tile" in flags and "amx_bf16" in flags


@pytest.fixture(scope="module")
def amx_min_t() -> int:
    assert gguf_ops.available() is None, gguf_ops.available()
    if not _cpu_reports_amx():
        assert "amx" not in gguf_ops.isas()
        pytest.skip("this CPU has no AMX-BF16")
    need("amx" in gguf_ops.isas(), "the CPU reports AMX but gguf_ops lists no 'amx' path")
    return int(gguf_ops.load_extension().amx_min_t)


def test_amx_is_listed_as_the_default_where_the_cpu_has_it(amx_min_t: int):
    assert gguf_ops.isas()[-2:] == ("avx512bf16", "amx")
    assert 9 <= amx_min_t <= 16


def _ulp(v: torch.Tensor) -> torch.Tensor:
    """One bfloat16 ulp (8 significant bits) of each |v| (float64)."""
    _, e = torch.frexp(v.abs())
    return torch.pow(2.0, (e - 8).double())


def _amx(x: torch.Tensor, raw: torch.Tensor, qtype: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    return gguf_ops.gguf_linear(x, raw, qtype, bias, isa="amx")


@pytest.mark.parametrize("qtype", TYPES, ids=[QTYPES[q].name for q in TYPES])
def test_amx_matches_float64_and_is_batch_invariant(qtype: int, amx_min_t: int):
    torch.manual_seed(qtype)
    for n in (7, 33, 576):
        for k in (256, 512):
            raw = random_blocks(qtype, n, k)
            weight = gguf_ops.dequantize(raw, qtype, n, k).to(torch.bfloat16).double()
            x = torch.randn(40, k).to(torch.bfloat16)
            sums = x.double() @ weight.T  # [40, N]
            bias = torch.randn(n).to(torch.bfloat16)
            for b in (None, bias):
                y = _amx(x, raw, qtype, b)
                assert y.dtype == torch.bfloat16 and y.shape == (40, n)
                ref = sums if b is None else sums + b.double()
                bound = _ulp(torch.maximum(sums.abs(), ref.abs())) + REL * float(ref.abs().max())
                err = (y.double() - ref).abs()
                assert bool((err <= bound).all()), f"N={n} K={k} bias={b is not None}: {float(err.max()):.3g}"
                where = f"N={n} K={k} bias={b is not None}"
                for t in (16, 17):  # prefixes: fewer token tiles, a partial last one
                    assert torch.equal(_amx(x[:t], raw, qtype, b), y[:t]), f"{where} T={t}"
                for t in (1, 2, 5, 8):  # amx_from=1 (a prompt's tokens): the tile unit for any T, same bits
                    small = gguf_ops.gguf_linear(x[:t], raw, qtype, b, isa="amx", amx_from=1)
                    assert torch.equal(small, y[:t]), f"{where} T={t} amx_from=1"
                # the same tokens in other tile columns, and weight rows in other tile rows
                assert torch.equal(_amx(x[3:], raw, qtype, b), y[3:]), where
                rows = slice(5, n)
                sub = _amx(x, raw[rows], qtype, None if b is None else b[rows])
                assert torch.equal(sub, y[:, rows]), where


@pytest.mark.parametrize("qtype", sorted(QTYPES), ids=[QTYPES[q].name for q in sorted(QTYPES)])
def test_amx_multiplies_the_row_paths_bfloat16_weights(qtype: int, amx_min_t: int):
    """x = the identity puts each dequantized weight alone in its sum, so the tile unit's output is the
    bfloat16 weights it multiplied: they must be gguf-py's, rounded to nearest even, bit for bit (every
    type; 40 rows: a full and a partial 32-row pass)."""
    k = 512
    raw = random_blocks(qtype, 40, k, seed=3)
    want = gguf_ops.reference_dequantize(raw, qtype, 40, k).to(torch.bfloat16)  # [N, K]
    got = _amx(torch.eye(k, dtype=torch.bfloat16), raw, qtype)  # [K, N]: row t is column t of W
    assert torch.equal(got.T, want)


def test_amx_isa_is_the_row_path_below_amx_min_t_and_for_float32(amx_min_t: int):
    torch.manual_seed(0)
    raw = random_blocks(12, 33, 512)
    bias = torch.randn(33)
    for t in range(1, amx_min_t):
        x = torch.randn(t, 512).to(torch.bfloat16)
        want = gguf_ops.gguf_linear(x, raw, 12, bias, isa="avx512bf16")
        assert torch.equal(_amx(x, raw, 12, bias), want), f"T={t}"
    x = torch.randn(amx_min_t + 7, 512)
    assert torch.equal(_amx(x, raw, 12, bias), gguf_ops.gguf_linear(x, raw, 12, bias, isa="avx512bf16"))


def test_weights_of_amx_all_t_bytes_take_the_tile_unit_at_every_t(amx_min_t: int):
    """An LM head's worth of bytes runs on the tile unit for every T, so a decode step (T = 1) and a
    speculative verify step (T = 1 + k) share its bits; a weight one row short of the bound keeps the
    row path below amx_min_t."""
    bound = int(gguf_ops.load_extension().amx_all_t_bytes)
    assert bound == 8 << 20
    qtype, k = 12, 256  # Q4_K: random valid blocks, 144 bytes a row
    row_bytes = k // QTYPES[qtype].block_size * QTYPES[qtype].type_size
    n = -(-bound // row_bytes)
    raw = random_blocks(qtype, n, k)
    assert raw.numel() >= bound > raw[1:].numel()
    torch.manual_seed(2)
    x = torch.randn(amx_min_t + 7, k).to(torch.bfloat16)
    tiles = _amx(x, raw, qtype)  # T >= amx_min_t: the tile unit whatever the size
    rows = gguf_ops.gguf_linear(x, raw, qtype, isa="avx512bf16")
    assert not torch.equal(tiles, rows)  # these inputs tell the two paths apart
    for t in (1, 2, 5, amx_min_t - 1):
        assert torch.equal(_amx(x[:t], raw, qtype), tiles[:t]), f"T={t}"
    for t in (1, 5):
        want = gguf_ops.gguf_linear(x[:t], raw[1:], qtype, isa="avx512bf16")
        assert torch.equal(_amx(x[:t], raw[1:], qtype), want), f"one row short, T={t}"
    xf = x[:3].float()  # float32 x: the row path at any size
    assert torch.equal(_amx(xf, raw, qtype), gguf_ops.gguf_linear(xf, raw, qtype, isa="avx512bf16"))


def _step(prompt_tokens: int) -> ForwardBatch:
    empty = torch.zeros(0, dtype=torch.int32)
    return ForwardBatch(num_reqs=0, num_tokens=0, block_size=16, query_lens=[], seq_lens=[], query_start_loc=empty,
                        seq_lens_tensor=empty, block_tables=empty, slot_mapping=empty, logits_indices=empty,
                        num_prompt_tokens=prompt_tokens)


def test_the_gguf_linear_puts_every_prompt_step_on_the_tile_unit(amx_min_t: int):
    # a prompt computed whole, in chunks or after a prefix-cache hit must give the same numbers: a step
    # that carries prompt tokens goes to the tile unit whatever its size (the same bits per row, see
    # above); a generation step goes there from amx_min_t rows, smaller ones keep the row path
    from heron_plugins.kernels.gguf import GGUFLinear

    torch.manual_seed(1)
    n, k = 576, 1536
    raw = random_blocks(3, n, k)
    part = SimpleNamespace(data=raw, qtype=3)
    linear = GGUFLinear(SimpleNamespace(shape=(n, k), parts=[part]), None, gguf_ops)
    x = torch.randn(amx_min_t + 23, k).to(torch.bfloat16)
    rows = gguf_ops.gguf_linear(x, raw, 3, isa="avx512bf16")
    tiles = gguf_ops.gguf_linear(x, raw, 3, isa="amx")
    differ = [i for i in range(len(x)) if not torch.equal(rows[i], tiles[i])]
    assert differ  # the two paths are told apart by these inputs: put such a row first
    x, rows, tiles = (t[differ + [i for i in range(len(x)) if i not in differ]] for t in (x, rows, tiles))
    for t in (1, 3, amx_min_t - 1, amx_min_t + 23):
        with running_batch(_step(prompt_tokens=1)):
            assert torch.equal(linear(x[:t]), tiles[:t]), f"prompt step of {t} rows"
        with running_batch(_step(prompt_tokens=0)):
            want = tiles[:t] if t >= amx_min_t else rows[:t]
            assert torch.equal(linear(x[:t]), want), f"generation step of {t} rows"
        assert torch.equal(linear(x[:t]), want), "outside a step: by the row count alone"
