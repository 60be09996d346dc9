"""Matmuls on GGUF quantized blocks as the file stores them, in C++ (``csrc/gguf_quant*.cpp``).

``gguf_linear(x, qweight, qtype)`` computes ``x @ W.T`` where ``W`` is ``uint8 [N, row_bytes]``: the
file's rows of ggml blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), multiplied as a dense model
of x's dtype would hold them: dequantized exactly (float32 ``x``), or rounded to bfloat16 (bfloat16 ``x``);
the activations are never rounded. Its row path dequantizes a few weight rows at a time (in registers,
straight into the multiply-adds; above a few tokens once into a per-thread buffer) and dots them with
every row of ``x`` in float32 sums (fused multiply-adds, or
``vdpbf16ps`` on CPUs with AVX512-BF16), in an order that depends on neither ``T`` nor the batch: an
output row is bit for bit the same however the tokens are batched, so a request's greedy tokens do not
depend on how its steps are cut (chunked prefill, prefix-cache hits). The tile path (``tiles_from``:
tiles of dequantized rows and ``at::mm``) differs from it by float summation order only, and in
bfloat16 that can flip a last bit and a greedy token at a near-tie; it runs only when asked for.
On CPUs with AMX-BF16 the default ISA path ``amx`` multiplies bfloat16 ``x`` of ``T >= amx_min_t``
rows (the extension's attribute; several times faster than the row path there) on the tile unit: the
same bfloat16 weights, summed in the tile unit's order, so its outputs may differ from the row path's
in last bits; within it an output element is still the same bits however the tokens are batched (for
``T >= amx_min_t``); ``amx_from`` moves that bound (heron's GGUF linears send every step that carries prompt
tokens there whatever its size, so a prompt's rows do not depend on how it is chunked, and generation
steps from ``amx_min_t`` rows). Fewer rows otherwise (decode, speculative verify steps) and float32 ``x``
run the row path, except on weights of ``amx_all_t_bytes`` (8 MiB) or more: an LM head streams from memory,
where the tile unit keeps up with the row path at ``T = 1`` and costs about the same at ``T = 5``, so such a
weight takes it at every ``T`` (a decode step and a speculative verify step then share its bits). Steps of up
to 16 rows run a few-token tile kernel (each 32-weight sub-block of 32 weight rows built in registers just
ahead of its tiles), more rows the many-token one (32 rows dequantized per pass); both give the same bits.

The kernels are built once per machine with ``torch.utils.cpp_extension`` (torch's extension cache)
for the portable baseline; AVX2 and AVX512 loops are compiled alongside with target attributes and
chosen at run time. ``HERON_GGUF_ISA=scalar|avx2|avx512|avx512bf16|amx`` (or the ``isa`` argument) forces a
path (``avx512bf16``: the AVX512 loops with ``vdpbf16ps`` for bfloat16 row dots, on CPUs with AVX512-BF16 and
AVX512-VBMI; ``amx``: that, plus the tile unit for bfloat16 x of many rows).
:func:`reference_dequantize` is a pure-torch dequantizer that needs no build."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import torch

from heron.layers.native_build import NativeExtension

__all__ = (
    "ISA_ENV",
    "QTYPES",
    "QType",
    "available",
    "dequantize",
    "gguf_linear",
    "isas",
    "linear_address",
    "load_extension",
    "reference_dequantize",
    "supported",
)

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = ("gguf_quant.cpp", "gguf_quant_kernels.cpp", "gguf_quant_simd.cpp", "gguf_quant_avx2.cpp",
            "gguf_quant_avx512.cpp", "gguf_quant_amx.cpp")
#: no -march=native: the baseline build runs anywhere, the ISA loops carry their own target attributes;
#: -ffp-contract=off keeps dequantization bit-exact with gguf-py (no fused multiply-adds)
_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
#: the environment variable that forces an ISA path (tests, benchmarks)
ISA_ENV = "HERON_GGUF_ISA"
#: the extension's ``small_t`` (rows of x up to which the row path runs) that keeps every T on it
_ALL_ROWS = 1 << 62


class QType(NamedTuple):
    """A ggml block type: its name, weights per block and bytes per block."""

    name: str
    block_size: int
    type_size: int


#: ggml type id -> layout, for the types these ops run
QTYPES: dict[int, QType] = {
    2: QType("Q4_0", 32, 18),
    3: QType("Q4_1", 32, 20),
    6: QType("Q5_0", 32, 22),
    7: QType("Q5_1", 32, 24),
    8: QType("Q8_0", 32, 34),
    12: QType("Q4_K", 256, 144),
    13: QType("Q5_K", 256, 176),
    14: QType("Q6_K", 256, 210),
}

_EXT = NativeExtension("heron_gguf_quant", [_CSRC / s for s in _SOURCES], _CFLAGS, openmp=True)


def supported(qtype: int) -> bool:
    """Whether these ops run ggml type ``qtype``."""
    return int(qtype) in QTYPES


def load_extension() -> ModuleType:
    """The compiled kernels, built on the first call; a failed build is remembered and re-raised."""
    return _EXT.load()


def available() -> str | None:
    """None when the kernels build and load here, else why not (first line of the error)."""
    try:
        load_extension()
    except Exception as err:
        return next(iter(str(err).strip().splitlines()), type(err).__name__)
    return None


def isas() -> tuple[str, ...]:
    """The ISA paths this CPU runs (``scalar`` first, the default last)."""
    return tuple(load_extension().isas())


def gguf_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qtype: int,
    bias: torch.Tensor | None = None,
    *,
    isa: str | None = None,
    tiles_from: int | None = None,
    amx_from: int = 0,
) -> torch.Tensor:
    """``x @ W.T + bias`` with ``W`` as GGUF blocks.

    Args:
        x: [T, K] float32 or bfloat16.
        qweight: uint8 [N, row_bytes], contiguous rows of ggml blocks of type ``qtype``.
        qtype: the ggml type id (a key of :data:`QTYPES`).
        bias: [N] or None.
        isa: force ``scalar``, ``avx2``, ``avx512``, ``avx512bf16`` or ``amx`` (default: ``$HERON_GGUF_ISA``,
            else the best).
        tiles_from: run the tile path (``at::mm``) when ``T >= tiles_from``; None (default): the row path
            (or the AMX path) for every ``T``.
        amx_from: on the ``amx`` path, the rows of bfloat16 ``x`` from which the tile unit runs (0: the
            extension's ``amx_min_t``; 1: every ``T``; negative: never, the row path).

    Returns:
        [T, N] in x's dtype.
    """
    ext = _EXT.module or load_extension()  # the per-call path: keep it short
    rows_up_to = _ALL_ROWS if tiles_from is None else tiles_from - 1
    return ext.gguf_linear(x, qweight, qtype, bias, isa or "", rows_up_to, amx_from)  # "": reads $HERON_GGUF_ISA


def linear_address() -> int:
    """The address of the extension's ``linear_entry(x, qweight, qtype, has_prompt)``: :func:`gguf_linear` as
    heron's GGUF linears call it (``amx_from`` 1 for a step with prompt tokens, else 0), for callers in C++."""
    return int(load_extension().linear_address())


def dequantize(qweight: torch.Tensor, qtype: int, n: int, k: int, *, isa: str | None = None) -> torch.Tensor:
    """The float32 [N, K] weights of ``qweight`` (uint8 [N, row_bytes]), bit-exact with gguf-py."""
    return load_extension().dequantize(qweight, int(qtype), int(n), int(k), isa or "")


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 2] -> float32 [..., 1] (little-endian halves)."""
    return raw.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """uint8 [B, G, 32] -> [B, G, 64] int: low nibbles then high nibbles of each group of 32 bytes."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1).int()


def _bits(qh: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 [B, m] -> [B, n, m] int: bit i of each byte, i < n."""
    shifts = torch.arange(n, dtype=torch.uint8).view(1, n, 1)
    return ((qh.unsqueeze(1) >> shifts) & 1).int()


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: uint8 [B, 12] -> (scales, mins), each float32 [B, 8, 1]."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([d & 63, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 63, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc.float().unsqueeze(-1), mn.float().unsqueeze(-1)


def _legacy(b: torch.Tensor, qtype: int) -> torch.Tensor:
    """Q4_0 .. Q8_0 blocks [B, type_size] -> [B, 32]."""
    d = _f16(b[:, :2])  # [B, 1]
    if qtype == 8:
        return b[:, 2:].contiguous().view(torch.int8).float() * d
    has_min = qtype in (3, 7)
    m = _f16(b[:, 2:4]) if has_min else None
    rest = b[:, 4:] if has_min else b[:, 2:]
    if qtype in (6, 7):  # 5-bit: 32 high bits, then the nibbles
        high = _bits(rest[:, :4], 8).transpose(1, 2).reshape(-1, 32)  # element l: bit l of the uint32
        q, zero = torch.cat([rest[:, 4:] & 0x0F, rest[:, 4:] >> 4], dim=-1).int() | (high << 4), 16
    else:
        q, zero = torch.cat([rest & 0x0F, rest >> 4], dim=-1).int(), 8
    return d * q.float() + m if m is not None else d * (q - zero).float()


def _kquant(b: torch.Tensor, qtype: int) -> torch.Tensor:
    """Q4_K, Q5_K, Q6_K blocks [B, type_size] -> [B, 256]."""
    n = b.shape[0]
    if qtype == 14:
        ql, qh, sc, d = b[:, :128], b[:, 128:192], b[:, 192:208], _f16(b[:, 208:210])
        low = torch.stack([ql.reshape(n, 2, 64) & 0x0F, ql.reshape(n, 2, 64) >> 4], dim=2).reshape(n, 2, 4, 32).int()  # e = 128 i + 64 nib + l
        shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
        high = ((qh.reshape(n, 2, 1, 32) >> shifts) & 3).int()  # [B, 2, 4, 32]: e = 128 i + 32 s + l
        q = ((low | (high << 4)) - 32).reshape(n, 16, 16).float()
        scale = (d * sc.contiguous().view(torch.int8).float()).unsqueeze(-1)  # [B, 16, 1]
        return (scale * q).reshape(n, 256)
    d, dmin = _f16(b[:, :2]).unsqueeze(-1), _f16(b[:, 2:4]).unsqueeze(-1)
    sc, mn = _k_scales(b[:, 4:16])
    qs = b[:, 48:] if qtype == 13 else b[:, 16:]
    q = _nibbles(qs.reshape(n, 4, 32)).reshape(n, 8, 32)
    if qtype == 13:
        q = q | (_bits(b[:, 16:48], 8) << 4)
    return ((d * sc) * q.float() - dmin * mn).reshape(n, 256)


def reference_dequantize(qweight: torch.Tensor, qtype: int, n: int, k: int) -> torch.Tensor:
    """Pure-torch dequantization (no C++ build) of uint8 [N, row_bytes] to float32 [N, K]."""
    qt = QTYPES.get(int(qtype))
    if qt is None:
        raise ValueError(f"unsupported GGML type {qtype}")
    blocks = qweight.reshape(-1, qt.type_size)  # [N * K / bs, type_size]
    out = _kquant(blocks, int(qtype)) if qt.block_size == 256 else _legacy(blocks, int(qtype))
    return out.reshape(n, k)
