"""The ``gguf`` linear kernel: projections that compute on a GGUF checkpoint's own quantized blocks.

With this kernel the loader keeps each quantized matrix of the file as its raw blocks
(``linear.weight.stored``: parts of ``uint8 [rows, row_bytes]`` with their GGML type; fused q/k/v
or gate/up parts of one type are one byte block) and no dequantized copy. :class:`GGUFLinear`
multiplies by them through :mod:`heron_plugins.kernels.gguf_ops` (one ``gguf_linear`` per
block of one type, outputs side by side). ``auto`` (and ``--linear-kernel gguf``) selects it for
quantized GGUF checkpoints: it multiplies by the dequantized weights (bf16-rounded in a bf16 model, as
a dense model holds them) without rounding the activations, and each token's outputs are the same bits
however the step batches tokens, so a request's tokens do not depend on how its steps are cut
(chunked prefill, prefix-cache hits). On CPUs with AMX, bf16 steps run on the tile unit (several times
faster, summed in the tile unit's order, each row still the same bits however the step batches it):
every step that carries prompt tokens, so a prompt's numbers stay the same whole, chunked or after a
prefix-cache hit, and generation steps of ``gguf_ops`` ``amx_min_t`` or more tokens (that many sequences
decoding together). Smaller generation steps (single-stream decode, speculative verify steps) keep the
row path (but for weights of ``amx_all_t_bytes`` or more, an LM head, which take the tile unit at every size),
so a request's generated tokens may depend on whether it decoded alongside 9+ others or in a
step with another request's prompt chunk (as on any batched GEMM). See :mod:`heron_plugins.kernels.gguf_ops`. ``dense`` (or ``onednn``) runs a dequantized copy instead. A layer the ops cannot run (a type they lack) or a layer loaded as floats (a row-parallel
input slice off the block boundaries) runs dequantized, and the log says which and why.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

import torch
from torch import nn

from heron.interfaces import LinearKernel, current_batch
from heron.layers.quantized import StoredWeight, stored_weight

__all__ = ("GGUFKernel", "GGUFLinear")

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.bfloat16)
#: a tensor-parallel layer's split (heron.layers.parallel), kept on the converted module
_LAYOUT = ("spans", "full_sizes", "in_span")


def _ops() -> ModuleType | None:
    """:mod:`heron_plugins.kernels.gguf_ops`, or None when it cannot be imported."""
    try:
        return importlib.import_module("heron_plugins.kernels.gguf_ops")
    except ImportError:
        return None


class GGUFLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held as GGUF blocks: one ``gguf_linear`` per run of rows of one type.

    Args:
        stored: the layer's quantized rows (every row covered).
        bias: [out] in the model dtype, or None.
        ops: the ops module (``gguf_linear``).
    """

    def __init__(self, stored: StoredWeight, bias: torch.Tensor | None, ops: Any) -> None:
        super().__init__()
        self.out_features, self.in_features = stored.shape
        self.gguf_linear = ops.gguf_linear  # (x [T, K], qweight, qtype) -> [T, N]
        self.linear_address = ops.linear_address()
        self.qtypes = [part.qtype for part in stored.parts]
        for i, part in enumerate(stored.parts):
            self.register_buffer(f"qweight{i}", part.data, persistent=False)  # uint8 [rows, row_bytes]
        self.bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # runs for every projection of every step: the buffers are read from the dict directly (not
        # through nn.Module.__getattr__), and a [T, K] input of one block type makes a single call
        buffers = self._buffers
        batch = current_batch()
        # a step with prompt tokens goes to the tile unit (AMX, where the CPU has it) whatever its size, so
        # a prompt gives the same numbers computed whole, in chunks or after a prefix-cache hit; a
        # generation step goes there from amx_min_t tokens (many sequences decoding), and a smaller one
        # (a single stream, a speculative verification) keeps the row path, but on a weight of
        # amx_all_t_bytes or more (an LM head), which the extension sends to the tile unit at every size
        amx_from = 1 if batch is not None and batch.num_prompt_tokens else 0
        if x.dim() == 2 and len(self.qtypes) == 1:
            y = self.gguf_linear(x, buffers["qweight0"], self.qtypes[0], amx_from=amx_from)  # [T, N], x's dtype
            return y if self.bias is None else y + self.bias
        flat = x.reshape(-1, self.in_features)  # [T, K]
        outs = [self.gguf_linear(flat, buffers[f"qweight{i}"], q, amx_from=amx_from) for i, q in enumerate(self.qtypes)]
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # [T, N]
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def native_linear(self) -> tuple[int, dict[str, torch.Tensor], str, int] | None:
        """This projection for callers that run a layer stack in C++ (the Llama family's native stack):
        the address of ``at::Tensor f(const at::Tensor& x, const at::Tensor& weight, int64_t arg, int64_t
        has_prompt)``, the dict and key its weight is read from at each call, and ``arg`` (the GGML type).
        ``f`` computes what :meth:`forward` does (a step with prompt tokens on the tile unit). None for a
        layer with a bias or with parts of several types."""
        if self.bias is not None or len(self.qtypes) != 1:
            return None
        return self.linear_address, self._buffers, "qweight0", self.qtypes[0]

    def extra_repr(self) -> str:
        from gguf import GGMLQuantizationType

        types = "+".join(GGMLQuantizationType(q).name for q in self.qtypes)
        return f"in_features={self.in_features}, out_features={self.out_features}, gguf {types}"


class GGUFKernel(LinearKernel):
    """Weight-only GGUF blocks as the file stores them (Q4_0 .. Q8_0, K-quants: what ``gguf_ops`` supports)."""

    name = "gguf"
    exact = False  # the dequantized weights as a dense model holds them, but not F.linear's summation order
    #: auto's first choice for checkpoints stored as GGUF blocks (kernels on the stored format come before
    #: exact ones; a dense checkpoint never gets it). Its sums run in an order that depends on neither the
    #: step's token count nor the batch, so a prefix-cache hit or a prefill chunk gives the same tokens
    priority = 100
    stored_formats = ("gguf",)

    def __init__(self) -> None:
        self.ops = _ops()
        if self.ops is None:
            raise RuntimeError("the gguf kernel needs heron_plugins.kernels.gguf_ops, which cannot be imported.")

    @classmethod
    def supports(cls, device: torch.device, dtype: torch.dtype) -> str | None:
        if dtype not in _DTYPES:
            return f"gguf computes in float32 or bfloat16, not {dtype}"
        if device.type != "cpu":
            return f"the gguf ops run on the CPU, not {device.type}"
        ops = _ops()
        why = "heron_plugins.kernels.gguf_ops cannot be imported" if ops is None else ops.available()
        return None if why is None else f"the gguf ops cannot run here ({why})"

    def convert(self, linear: nn.Linear, name: str) -> nn.Module:
        stored = stored_weight(linear.weight)
        if stored is None:
            return linear  # loaded as floats (e.g. a row-parallel slice off the block boundaries): dense
        missing = sorted({q for q in (p.qtype for p in stored.parts) if not self.ops.supported(q)})
        why = f"GGML types {missing} have no gguf op" if missing else None
        if why is None and not stored.complete():
            why = "some fused part is stored as floats"
        if why is None:
            module = GGUFLinear(stored, linear.bias, self.ops)
            for attr in _LAYOUT:  # the tensor-parallel split, for LoRA under tensor parallelism
                if hasattr(linear, attr):
                    setattr(module, attr, getattr(linear, attr))
            return module
        log.info("gguf: %s runs dequantized (%s)", name, why)
        linear.weight = nn.Parameter(stored.dequantize(linear.weight).to(linear.weight.dtype), requires_grad=False)
        return linear
