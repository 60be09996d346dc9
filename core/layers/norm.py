"""Normalisation layers: RMSNorm (Llama family), GemmaRMSNorm (``1 + w`` scale) and LayerNorm.

RMS statistics are taken in float32 and the result cast back, as the checkpoints expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ("GemmaRMSNorm", "LayerNorm", "RMSNorm")


class RMSNorm(nn.Module):
    """Root-mean-square layer norm: ``weight * x / sqrt(mean(x^2) + eps)``.

    Args:
        hidden_size: size of the last dimension.
        eps: added to the mean square before the square root.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [..., hidden] in ``x``'s dtype (the statistics are taken in fp32)."""
        if x.dtype == self.weight.dtype:
            # one fused op (statistics in fp32 inside); equal to the formula below in fp32,
            # within one bf16 ulp of it in bf16
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GemmaRMSNorm(nn.Module):
    """Gemma's RMSNorm: ``x / sqrt(mean(x^2) + eps) * (1 + weight)``, all in fp32, then cast.

    The weight is stored as Gemma checkpoints store it (zero-centred); unlike :class:`RMSNorm`
    the scale is applied before the cast back to the input dtype, as transformers does.

    Args:
        hidden_size: size of the last dimension.
        eps: added to the mean square before the square root.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [..., hidden] in ``x``'s dtype."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * (1.0 + self.weight.float())).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` over the last dimension, with a bias unless ``bias=False``.

    Args:
        hidden_size: size of the last dimension.
        eps: added to the variance.
        bias: whether the norm has a learned bias.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__(hidden_size, eps=eps, bias=bias)
