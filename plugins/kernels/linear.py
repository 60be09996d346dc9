"""Linear kernels for CPU: plain ``F.linear``, prepacked oneDNN weights, weight-only int4.

``dense`` keeps the model's ``nn.Linear`` layers. ``onednn`` reorders each weight once into
oneDNN's blocked layout, so a matmul no longer repacks its weight on every call; the arithmetic
is the same oneDNN bf16 GEMM ``F.linear`` runs (equal results, about 1.3-2x faster per call for
the small GEMMs of a 135M model). ``int4`` quantizes every projection to 4 bits (asymmetric,
groups of 32 input channels, the grid of GGUF's Q4_1) and reads the packed 4-bit weights for
steps of at most ``MAX_QUANT_ROWS`` tokens, where decode is bound by weight bandwidth; larger
steps multiply the same quantized values dequantized to bf16, so a request's numbers do not
depend on the batch it lands in. The LM head (tied to the embeddings, Q8_0 in the bundled GGUF)
gets per-channel int8 instead of int4.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from heron.interfaces import LinearKernel

__all__ = ("DenseKernel", "Int4Kernel", "Int4Linear", "OneDNNKernel", "PackedLinear", "quantize_int4")

#: steps with at most this many token rows use the 4-bit weights (measured: 4-bit GEMV is ~3.5x
#: faster than bf16 at 1 row, still faster at 8, slower from 16 rows on)
MAX_QUANT_ROWS = 8
#: input channels per int4 scale/zero group
GROUP_SIZE = 32


def _onednn_bf16() -> str | None:
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "this CPU has no native bf16 for oneDNN"
    return None


class PackedLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held in oneDNN's prepacked layout (bf16, CPU)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)
        self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, onednn"


def quantize_int4(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit quantization per group of ``group_size`` input channels.

    Returns:
        (q [N, K] int32 in 0..15, scales_and_zeros [K / group_size, N, 2] bf16) such that
        ``w ~= (q - 8) * scale + zero`` (torch's int4 convention; ``zero = min + 8 * scale``).
    """
    n, k = weight.shape
    w = weight.detach().float().view(n, k // group_size, group_size)
    lo, hi = w.amin(-1), w.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    zero = lo + 8 * scale
    sz = torch.stack((scale, zero), dim=-1).to(torch.bfloat16)  # [N, G, 2]
    s, z = sz[..., 0].float(), sz[..., 1].float()
    # quantize against the bf16-rounded scale/zero the kernel will use
    q = torch.round((w - z[..., None]) / s[..., None] + 8).clamp_(0, 15).to(torch.int32)
    return q.view(n, k), sz.transpose(0, 1).contiguous()


def dequantize_int4(q: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int = GROUP_SIZE) -> torch.Tensor:
    """The float32 weights ``(q - 8) * scale + zero`` that :func:`quantize_int4`'s output encodes."""
    n, k = q.shape
    s = scales_and_zeros[..., 0].t().float().repeat_interleave(group_size, dim=1)  # [N, K]
    z = scales_and_zeros[..., 1].t().float().repeat_interleave(group_size, dim=1)
    return (q.float() - 8) * s + z


class _Dense(nn.Module):
    """The large-step path: oneDNN-packed when available, else ``F.linear``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.packed = PackedLinear(weight, bias) if _onednn_bf16() is None and weight.dtype == torch.bfloat16 else None
        if self.packed is None:
            self.weight = weight.detach().contiguous()
            self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return self.packed(x)
        return F.linear(x, self.weight, self.bias)


class Int4Linear(nn.Module):
    """4-bit weights for small steps (torch's packed int4 CPU GEMM), their bf16 dequantization otherwise."""

    def __init__(self, linear: nn.Linear, group_size: int = GROUP_SIZE) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        self.group_size = group_size
        q, self.scales_and_zeros = quantize_int4(linear.weight, group_size)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.bias = bias
        dense_weight = dequantize_int4(q, self.scales_and_zeros, group_size).to(torch.bfloat16)
        self.dense = _Dense(dense_weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > MAX_QUANT_ROWS:
            return self.dense(x)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), self.packed, self.group_size,
                                                         self.scales_and_zeros)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 group {self.group_size}"


class Int8Linear(nn.Module):
    """Per-output-channel symmetric int8 weights for small steps, their bf16 dequantization otherwise."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-8).to(torch.bfloat16)
        self.q = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
        self.scales = scale
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.dense = _Dense((self.q.float() * scale.float()[:, None]).to(torch.bfloat16), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > MAX_QUANT_ROWS:
            return self.dense(x)
        out = torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.q, self.scales)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class DenseKernel(LinearKernel):
    """``torch.nn.functional.linear`` as the model built it (any device, any dtype)."""

    name = "dense"
    exact = True
    priority = 0  # the fallback that always runs

    @classmethod
    def supports(cls, device: torch.device, dtype: torch.dtype) -> str | None:
        return None

    def convert(self, linear: nn.Linear, name: str) -> nn.Module:
        return linear


class OneDNNKernel(LinearKernel):
    """bf16 weights prepacked once for oneDNN (CPU); same GEMM as ``F.linear`` without the per-call reorder."""

    name = "onednn"
    exact = True
    priority = 100

    @classmethod
    def supports(cls, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type != "cpu":
            return f"onednn runs on the CPU, not {device.type}"
        if dtype != torch.bfloat16:
            return f"onednn prepacks bf16 weights only, not {dtype}"
        return _onednn_bf16()

    def convert(self, linear: nn.Linear, name: str) -> nn.Module:
        return PackedLinear(linear.weight, linear.bias)


class Int4Kernel(LinearKernel):
    """Weight-only 4-bit projections (int8 LM head) for bandwidth-bound small steps (CPU, bf16)."""

    name = "int4"
    exact = False
    priority = None  # quantizes: never chosen by auto, only when named
    #: layers kept at 8 bits (per output channel) instead of 4
    int8_layers: ClassVar[tuple[str, ...]] = ("lm_head",)

    @classmethod
    def supports(cls, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type != "cpu":
            return f"int4 uses torch's CPU int4 GEMM, not {device.type}"
        if dtype != torch.bfloat16:
            return f"int4 computes in bf16; the model runs in {dtype} (use --dtype bfloat16)"
        return None

    def convert(self, linear: nn.Linear, name: str) -> nn.Module:
        if name.split(".")[-1] in self.int8_layers:
            return Int8Linear(linear)
        if linear.in_features % GROUP_SIZE:
            return _Dense(linear.weight.to(torch.bfloat16), linear.bias)
        return Int4Linear(linear)
