"""Gated activations and the gated MLP used by Llama-family decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ("GatedMLP", "SiluAndMul")


class SiluAndMul(nn.Module):
    """``silu(gate) * up`` where the input is ``[gate | up]`` along the last dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 2 * d] -> [..., d]."""
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up


class GatedMLP(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with gate and up fused into one ``gate_up_proj`` matmul.

    The fused weight is ``[2 * intermediate, hidden]``: rows ``[0, I)`` are the gate projection,
    rows ``[I, 2I)`` the up projection.

    Args:
        hidden_size: model width.
        intermediate_size: MLP width.
        bias: whether the projections carry biases.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.intermediate_size = intermediate_size
        self.gate_up_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[T, hidden] -> [T, hidden]."""
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))
