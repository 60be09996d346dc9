"""The linear-kernel contract: how a model's ``nn.Linear`` layers multiply once weights are loaded.

Model plugins build plain ``torch.nn.Linear`` layers. After the weights are in, the engine hands
every one of them to the chosen kernel's :meth:`LinearKernel.convert`, which returns the module
to use instead (same input and output shapes: ``[T, in] -> [T, out]`` in the model dtype). A
kernel may repack the weight (a prepacked oneDNN layout), quantize it (weight-only int4/int8),
or keep it as it is. The ``--linear-kernel`` flag names one; ``auto`` asks each installed exact kernel
that declares a :attr:`LinearKernel.priority`, highest first, whether it supports the device and dtype.

A kernel may also compute on the checkpoint's stored tensors: one that lists a checkpoint's
``stored_format`` (``"gguf"``) in :attr:`LinearKernel.stored_formats` gets the model loaded with the
file's quantized blocks kept (no dequantized copy), and ``auto`` tries such kernels first, by priority,
for checkpoints stored that way. In :meth:`LinearKernel.convert` a layer whose weight was loaded that
way carries ``linear.weight.stored``, a :class:`heron.layers.quantized.StoredWeight` (its rows as
parts of raw blocks with their GGML type); ``linear.weight`` itself then holds no values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ("LinearKernel",)


class LinearKernel(ABC):
    """Converts loaded ``nn.Linear`` layers into the modules that compute them."""

    #: the ``--linear-kernel`` name
    name: ClassVar[str]
    #: whether results equal ``torch.nn.functional.linear`` bit for bit (``auto`` only picks these)
    exact: ClassVar[bool] = False
    #: how eagerly ``--linear-kernel auto`` tries this kernel (exact kernels only): higher first,
    #: equal ones in name order; ``None`` = never chosen by ``auto``, only when named. The built-in
    #: kernels use 0 for plain ``F.linear`` and 100 for faster exact ones.
    priority: ClassVar[int | None] = None
    #: checkpoint storage formats (``Checkpoint.stored_format``) whose quantized blocks this kernel computes
    #: on; the model is then loaded with them kept, and every layer holding them must be converted
    stored_formats: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def supports(cls, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when this kernel can run linears of ``dtype`` on ``device``, else why not."""

    @abstractmethod
    def convert(self, linear: nn.Linear, name: str) -> nn.Module:
        """The module that replaces ``linear`` (may be ``linear`` itself).

        ``name`` is the layer's qualified name in the model (``model.layers.0.mlp.down_proj``,
        ``lm_head``), for kernels that treat some layers differently.

        Called once per layer after loading, under ``torch.no_grad()``. The replacement must not
        keep a reference to ``linear.weight`` unless it needs it: the engine drops the original
        layer, so memory the kernel repacked is not held twice (tied embeddings excepted). For a
        kernel with :attr:`stored_formats`, ``linear.weight.stored`` (when set) holds the layer's
        quantized blocks; a layer it cannot run on them it dequantizes (``stored.dequantize(linear.weight)``).
        """
