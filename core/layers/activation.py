"""Activation functions named as HF configs name them, gated activations and the gated MLP.

:func:`get_act_fn` maps a config's ``hidden_act`` / ``hidden_activation`` string to a function;
the ``*AndMul`` modules apply an activation to the gate half of a fused ``[gate | up]`` tensor and
multiply by the up half, the way Llama (SiLU) and Gemma (GeLU, tanh approximation) MLPs do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from heron.layers.parallel import MergedColumnParallelLinear, RowParallelLinear

__all__ = ("ACT_FNS", "ActAndMul", "GatedMLP", "GeluAndMul", "SiluAndMul", "get_act_fn")

ActFn = Callable[[torch.Tensor], torch.Tensor]


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_gelu_tanh: ActFn = partial(F.gelu, approximate="tanh")

#: HF activation name -> function (every tanh-approximated GeLU variant is one fused op here; they
#: differ from transformers' Python formulas by float rounding only)
ACT_FNS: dict[str, ActFn] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "relu2": _relu2,
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardswish": F.hardswish,
    "linear": _identity,
}


def get_act_fn(name: str) -> ActFn:
    """The activation an HF config names (``"silu"``, ``"gelu_pytorch_tanh"``, ``"gelu_new"``, ...).

    Raises:
        ValueError: heron does not know the name.
    """
    fn = ACT_FNS.get(name)
    if fn is None:
        raise ValueError(f"Unsupported activation {name!r}; heron supports {', '.join(sorted(ACT_FNS))}.")
    return fn


class ActAndMul(nn.Module):
    """``act(gate) * up`` where the input is ``[gate | up]`` along the last dimension.

    Args:
        activation: an HF activation name (see :func:`get_act_fn`).
    """

    def __init__(self, activation: str = "silu") -> None:
        super().__init__()
        self.activation = activation
        self.act = get_act_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 2 * d] -> [..., d]."""
        gate, up = x.chunk(2, dim=-1)
        return self.act(gate) * up

    def extra_repr(self) -> str:
        return self.activation


class SiluAndMul(ActAndMul):
    """``silu(gate) * up`` (Llama-family MLPs)."""

    def __init__(self) -> None:
        super().__init__("silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 2 * d] -> [..., d]; without autograd the product is written into silu's output
        (same bits, one temporary fewer)."""
        gate, up = x.chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return F.silu(gate) * up
        return F.silu(gate).mul_(up)


class GeluAndMul(ActAndMul):
    """``gelu(gate) * up`` (GeGLU, Gemma MLPs).

    Args:
        approximate: ``"tanh"`` (Gemma's ``gelu_pytorch_tanh``) or ``"none"`` (exact erf GeLU).
    """

    def __init__(self, approximate: str = "tanh") -> None:
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate must be 'tanh' or 'none', not {approximate!r}.")
        super().__init__("gelu_pytorch_tanh" if approximate == "tanh" else "gelu")


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` with gate and up fused into one ``gate_up_proj`` matmul.

    The fused weight is ``[2 * intermediate, hidden]``: rows ``[0, I)`` are the gate projection,
    rows ``[I, 2I)`` the up projection. Under tensor parallelism (``size > 1``) each rank holds its
    share of the gate and up rows (column parallel) and the matching columns of ``down_proj``
    (row parallel, one all-reduce); at ``size == 1`` both are plain ``nn.Linear`` layers.

    Args:
        hidden_size: model width.
        intermediate_size: MLP width (the full width, before any split).
        bias: whether the projections carry biases.
        activation: the HF name of the gate's activation (``hidden_act``); SiLU by default.
        rank: this process's tensor-parallel rank.
        size: the tensor-parallel size.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        bias: bool = False,
        activation: str = "silu",
        *,
        rank: int = 0,
        size: int = 1,
    ) -> None:
        super().__init__()
        self.intermediate_size = intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(
            hidden_size, [intermediate_size] * 2, bias=bias, rank=rank, size=size
        )  # [2 * I_local, hidden]
        self.down_proj = RowParallelLinear(intermediate_size, hidden_size, bias=bias, rank=rank, size=size)
        self.act_fn = SiluAndMul() if activation in ("silu", "swish") else ActAndMul(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[T, hidden] -> [T, hidden]."""
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))
