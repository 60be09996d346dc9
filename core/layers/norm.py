"""Normalisation layers: RMSNorm (Llama family), GemmaRMSNorm (``1 + w`` scale) and LayerNorm.

RMS statistics are taken in float32 and the result cast back, as the checkpoints expect.
:class:`RMSNorm` also takes the block's residual: ``norm(x, residual)`` adds it first and returns
the normed sum with the sum itself, in one fused op on the CPU (:mod:`heron.layers.fused_ops`).
"""

from __future__ import annotations

from typing import overload

import torch
from torch import nn

from heron.layers.fused_ops import add_rms_norm, rms_norm

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

    @overload
    def forward(self, x: torch.Tensor, residual: None = None) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[..., hidden] -> [..., hidden] in ``x``'s dtype (the statistics are taken in fp32).

        With ``residual`` ([T, hidden], ``x``'s shape and dtype): ``s = x + residual`` (rounded to
        the dtype, as a separate add would be) and returns ``(norm(s), s)``, fused in one pass.
        """
        if residual is not None:
            return add_rms_norm(x, residual, self.weight, self.eps)
        if x.dtype == self.weight.dtype:
            # one fused op (statistics in fp32 inside); equal to the formula below in fp32 up to
            # the order of the sum of squares; the C++ op rounds as it does in bf16
            return rms_norm(x, self.weight, self.eps)
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
