"""``gguf_ops`` runs GGUF blocks in C++: exact dequantization and matmuls within the stated tolerance.

Every type is checked on odd shapes (N=97 rows, K = 2-3 blocks) against gguf-py (``gguf.quants``),
on every ISA path this CPU runs (scalar, AVX2, AVX512): ``dequantize`` must equal gguf-py bit for
bit; ``gguf_linear`` must match ``x @ dequantize(W).T`` within ``LINEAR_RTOL`` of the output's scale
on the int8 dot path (T <= SMALL_T) and within float32 rounding on the tiled GEMM path. The kernels
are built here, not skipped: a build error fails with the compiler's message.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heron_plugins.kernels import gguf_ops
from heron_plugins.kernels.gguf_ops import QTYPES, SMALL_T
from tests.conftest import need

try:
    import gguf
    import gguf.quants
except ImportError:  # pragma: no cover - the test extra installs it
    gguf = None

N = 97
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
    assert isas[0] == "scalar" and set(isas) <= {"scalar", "avx2", "avx512"}


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


@pytest.mark.parametrize("qtype", TYPES, ids=[QTYPES[q].name for q in TYPES])
def test_linear_matches_dequantized_matmul(qtype: int):
    torch.manual_seed(qtype)
    k = sizes(qtype)[1]
    raw = random_blocks(qtype, N, k)
    weight = gguf_dequantize(raw, qtype)  # [N, K]
    bias = torch.randn(N)
    for t in (1, 3, 17, 64):
        x = torch.randn(t, k)
        want = x @ weight.T + bias  # [T, N]
        scale = float(want.abs().max())
        for isa in all_isas():
            got = gguf_ops.gguf_linear(x, raw, qtype, bias, isa=isa)
            assert got.shape == (t, N) and got.dtype == torch.float32
            err = float((got - want).abs().max())
            bound = gguf_ops.LINEAR_RTOL * scale if t <= SMALL_T else 1e-5 * scale
            assert err <= bound, f"{isa} T={t}: max diff {err:.3g} > {bound:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("qtype", [3, 8, 14], ids=["Q4_1", "Q8_0", "Q6_K"])
def test_linear_bfloat16(qtype: int):
    torch.manual_seed(0)
    k = sizes(qtype)[0]
    raw = random_blocks(qtype, N, k)
    weight = gguf_dequantize(raw, qtype)
    for t in (1, 40):
        x = torch.randn(t, k).to(torch.bfloat16)
        want = x.float() @ weight.T
        for isa in all_isas():  # T=40: each path's bfloat16 tiles (its own rounding code) and a bf16 GEMM
            got = gguf_ops.gguf_linear(x, raw, qtype, isa=isa)
            assert got.dtype == torch.bfloat16 and got.shape == (t, N)
            # bf16 rounding of weights and output (2^-8 relative each) on top of the path's own error
            err, scale = float((got.float() - want).abs().max()), float(want.abs().max())
            assert err <= (gguf_ops.LINEAR_RTOL + 1e-2) * scale, f"{isa} T={t}: {err:.3g} (scale {scale:.3g})"


def test_isa_paths_agree_and_env_forces_one(monkeypatch: pytest.MonkeyPatch):
    torch.manual_seed(1)
    raw = random_blocks(12, N, 512)
    x = torch.randn(3, 512)
    by_isa = {isa: gguf_ops.gguf_linear(x, raw, 12, isa=isa) for isa in all_isas()}
    ref = by_isa["scalar"]
    for isa, y in by_isa.items():  # same int8 activations, exact integer sums: only float summation order differs
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=isa)
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
