"""``gguf_ops`` runs GGUF blocks in C++: exact dequantization, and two matmul paths that agree.

Every type is checked on odd shapes (N=97 rows, K = 2-3 blocks) against gguf-py (``gguf.quants``),
on every ISA path this CPU runs (scalar, AVX2, AVX512, AVX512-BF16): ``dequantize`` must equal gguf-py
bit for bit. ``gguf_linear``'s row path (the default for every T) and its tile path (dequantized tiles and
``at::mm``) are run on the same x for T = 1, 3, 16, 17: float32 outputs within ``F32_RTOL`` of the largest
(measured worst 7e-7), bfloat16 outputs within one bfloat16 ulp of the largest (measured: equal but for
rare last-bit flips); the row path against gguf-py's dequantization and a float64 matmul (of the
bf16-rounded weights for bf16 x) within ``F32_RTOL`` of the largest output (float32) or one bf16 ulp
(bfloat16). A row path output row does not depend on T or on the other rows of x, bit for bit.
The kernels are built here, not skipped: a build error fails with the compiler's message.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heron_plugins.kernels import gguf_ops
from heron_plugins.kernels.gguf_ops import QTYPES
from tests.conftest import need

try:
    import gguf
    import gguf.quants
except ImportError:  # pragma: no cover - the test extra installs it
    gguf = None

N = 97
#: float32 decode vs tile path, and vs float64: max abs diff <= F32_RTOL * max |y| (measured <= 7e-7)
F32_RTOL = 1e-5
ROWS, TILES = None, 1  # gguf_linear's tiles_from: every T on the row path, or on the tile path
TYPES = sorted(QTYPES)
#: where each type keeps its fp16 scales (byte offsets in a block), for random valid K-quant blocks
_HALF_OFFSETS = {12: (0, 2), 13: (0, 2), 14: (208,)}


def _gguf() -> object:
    need(gguf is not None, "the gguf package (test extra) is not installed")
    return gguf


def random_blocks(qtype: int, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, row_bytes]: gguf-py's quantization of random floats, or random valid blocks where it has none."""
    g = _gguf()
    rng = np.random.default_rng(seed + qtype)
    try:
        raw = g.quants.quantize(rng.standard_normal((n, k)).astype(np.float32), g.GGMLQuantizationType(qtype))
    except NotImplementedError:
        qt = QTYPES[qtype]
        raw = rng.integers(0, 256, size=(n, k // qt.block_size * qt.type_size), dtype=np.uint8)
        blocks = raw.reshape(-1, qt.type_size)
        for off in _HALF_OFFSETS[qtype]:  # finite scales of a realistic size instead of random bit patterns
            scales = rng.uniform(-0.02, 0.02, blocks.shape[0]).astype(np.float16)
            blocks[:, off : off + 2] = scales.view(np.uint8).reshape(-1, 2)
    return torch.from_numpy(np.ascontiguousarray(raw))


def gguf_dequantize(raw: torch.Tensor, qtype: int) -> torch.Tensor:
    g = _gguf()
    return torch.from_numpy(g.quants.dequantize(raw.numpy(), g.GGMLQuantizationType(qtype)))


def sizes(qtype: int) -> list[int]:
    bs = QTYPES[qtype].block_size
    return [2 * bs, 3 * bs]


def all_isas() -> tuple[str, ...]:
    return gguf_ops.isas()


def test_builds_and_reports_isas():
    assert gguf_ops.available() is None, gguf_ops.available()
    isas = all_isas()
    assert isas[0] == "scalar" and set(isas) <= {"scalar", "avx2", "avx512", "avx512bf16", "amx"}


def test_qtypes_match_gguf():
    g = _gguf()
    for qtype, qt in QTYPES.items():
        assert g.GGMLQuantizationType(qtype).name == qt.name
        assert g.constants.GGML_QUANT_SIZES[g.GGMLQuantizationType(qtype)] == (qt.block_size, qt.type_size)
        assert gguf_ops.supported(qtype)
    assert not gguf_ops.supported(0) and not gguf_ops.supported(10)  # F32, Q2_K


@pytest.mark.parametrize("qtype", TYPES, ids=[QTYPES[q].name for q in TYPES])
def test_dequantize_is_exact(qtype: int):
    for k in sizes(qtype):
        raw = random_blocks(qtype, N, k)
        want = gguf_dequantize(raw, qtype)
        assert torch.equal(gguf_ops.reference_dequantize(raw, qtype, N, k), want)
        for isa in all_isas():
            got = gguf_ops.dequantize(raw, qtype, N, k, isa=isa)
            assert got.dtype == torch.float32 and got.shape == (N, k)
            assert torch.equal(got, want), f"{isa}: max diff {(got - want).abs().max()}"


def _linear(x: torch.Tensor, raw: torch.Tensor, qtype: int, isa: str, tiles_from: int | None,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """``gguf_linear`` with its path forced: ``ROWS`` (row dots) or ``TILES`` (dequantized tiles + at::mm)."""
    return gguf_ops.gguf_linear(x, raw, qtype, bias, isa=isa, tiles_from=tiles_from)


def _bf16_ulp(y: torch.Tensor) -> float:
    """One bfloat16 ulp at the largest |y| (8 significant bits)."""
    return 2.0 ** (int(torch.floor(torch.log2(y.abs().max().double()))) - 7)


@pytest.mark.parametrize("qtype", TYPES, ids=[QTYPES[q].name for q in TYPES])
def test_row_path_matches_tile_path_and_float64(qtype: int):
    torch.manual_seed(qtype)
    k = sizes(qtype)[1]
    raw = random_blocks(qtype, N, k)
    weight = gguf_dequantize(raw, qtype).double()  # [N, K]
    weight_bf16 = weight.to(torch.bfloat16).double()  # what both paths multiply bf16 x by
    bias = torch.randn(N)
    for t in (1, 3, 16, 17):
        x = torch.randn(t, k)
        xb = x.to(torch.bfloat16)
        ref32 = x.double() @ weight.T + bias.double()  # [T, N]
        ref16 = xb.double() @ weight_bf16.T
        for isa in all_isas():
            got, tiles = _linear(x, raw, qtype, isa, ROWS, bias), _linear(x, raw, qtype, isa, TILES, bias)
            assert got.shape == (t, N) and got.dtype == torch.float32
            scale = float(tiles.abs().max())
            err = float((got - tiles).abs().max())
            assert err <= F32_RTOL * scale, f"{isa} T={t}: rows vs tiles {err:.3g} (scale {scale:.3g})"
            err = float((got.double() - ref32).abs().max())
            assert err <= F32_RTOL * scale, f"{isa} T={t}: rows vs float64 {err:.3g} (scale {scale:.3g})"
            got, tiles = _linear(xb, raw, qtype, isa, ROWS), _linear(xb, raw, qtype, isa, TILES)
            assert got.dtype == torch.bfloat16 and got.shape == (t, N)
            ulp = _bf16_ulp(tiles)
            err = float((got.float() - tiles.float()).abs().max())
            assert err <= ulp, f"{isa} T={t}: bf16 rows vs tiles {err:.3g} > 1 ulp {ulp:.3g}"
            err = float((got.double() - ref16).abs().max())
            assert err <= ulp, f"{isa} T={t}: bf16 rows vs float64 {err:.3g} > 1 ulp {ulp:.3g}"


@pytest.mark.parametrize("qtype", TYPES, ids=[QTYPES[q].name for q in TYPES])
def test_row_path_outputs_do_not_depend_on_t(qtype: int):
    torch.manual_seed(100 + qtype)
    k = sizes(qtype)[0]
    raw = random_blocks(qtype, N, k)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(8, k).to(dtype)
        for isa in all_isas():
            whole = _linear(x, raw, qtype, isa, ROWS)  # [8, N]: rows of x in groups of 4
            for i in range(8):
                one = _linear(x[i : i + 1], raw, qtype, isa, ROWS)
                assert torch.equal(one[0], whole[i]), f"{isa} {dtype} row {i}"
            assert torch.equal(_linear(x[:3], raw, qtype, isa, ROWS), whole[:3]), f"{isa} {dtype} T=3"


def test_bias_is_added_like_the_tile_path():
    torch.manual_seed(2)
    raw = random_blocks(3, N, 64)
    x = torch.randn(2, 64).to(torch.bfloat16)
    bias = torch.randn(N)
    for isa in all_isas():
        got = gguf_ops.gguf_linear(x, raw, 3, bias, isa=isa)  # the row path
        want = _linear(x, raw, 3, isa, ROWS) + bias.to(torch.bfloat16)  # the tile path's bf16 add
        assert torch.equal(got, want), isa
        got = gguf_ops.gguf_linear(x.float(), raw, 3, bias, isa=isa)
        want = _linear(x.float(), raw, 3, isa, ROWS) + bias
        assert torch.equal(got, want), isa


def test_isa_paths_agree_and_env_forces_one(monkeypatch: pytest.MonkeyPatch):
    torch.manual_seed(1)
    raw = random_blocks(12, N, 512)
    x = torch.randn(3, 512)
    by_isa = {isa: gguf_ops.gguf_linear(x, raw, 12, isa=isa) for isa in all_isas()}
    ref = by_isa["scalar"]
    for isa, y in by_isa.items():  # the same dequantized weights: only float summation order differs
        torch.testing.assert_close(y, ref, rtol=F32_RTOL, atol=F32_RTOL * float(ref.abs().max()), msg=isa)
    monkeypatch.setenv(gguf_ops.ISA_ENV, "scalar")
    assert torch.equal(gguf_ops.gguf_linear(x, raw, 12), ref)
    monkeypatch.setenv(gguf_ops.ISA_ENV, "no-such-isa")
    with pytest.raises(RuntimeError, match="not available on this CPU"):
        gguf_ops.gguf_linear(x, raw, 12)


def test_rejects_bad_inputs():
    raw = random_blocks(8, 4, 64)
    with pytest.raises(RuntimeError, match="row_bytes"):
        gguf_ops.gguf_linear(torch.randn(1, 96), raw, 8)
    with pytest.raises(RuntimeError, match="unsupported GGML type"):
        gguf_ops.gguf_linear(torch.randn(1, 64), raw, 10)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        gguf_ops.gguf_linear(torch.randn(1, 64, dtype=torch.float64), raw, 8)
    with pytest.raises(ValueError, match="unsupported"):
        gguf_ops.reference_dequantize(raw, 10, 4, 64)
