"""Fused element-wise ops for the layers' hot path, in C++ (``csrc/fused_ops.cpp``) with pure-torch fallbacks.

A batch-1 decode step is mostly small ops whose dispatch costs as much as their math: the residual
add and RMS norm, the q/k rotation. Each is one C++ call here (a scalar-``exp`` SiLU-and-mul was
slower than torch's vectorized ``silu``, so the activation stays in torch). The
kernels round every intermediate that the torch formulas round, so their results equal the
fallbacks' (the RMS norm's fp32 sum of squares may be added in another order).

The ops are batch invariant: a row's result depends on that row alone, not on how many rows share
the call nor on the thread count (rows are split over threads, never a row, and the norm's sum of
squares is added in one order fixed by the row's length). They are on unless ``HERON_FUSED_OPS=0``
(a batch-1 bf16 decode step of the bundled model: 15.2 -> 12.9 ms on a 2-core AMD EPYC). Being batch
invariant, they never make a prompt's numbers depend on whether it was computed whole, in chunks or
after a prefix-cache hit.
The extension is built on first use with ``torch.utils.cpp_extension``
(``-O3 -march=native``) and cached per machine (~/.cache/torch_extensions). Where it cannot be
built, when it is off, or for tensors it does not take (not on the CPU, not fp32/bf16, autograd on),
the same functions run the torch formulas, which round as the kernels do: in bf16 both give the
same bits but for a rare row whose sum of squares, added in another order, rounds otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

import torch

from heron.layers.native_build import NativeExtension, cpu_flags_digest

__all__ = ("add_rms_norm", "argmax_rows", "fused_available", "load_fused_ops", "native_addresses", "rms_norm",
           "rotate_heads_fused")

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).parent / "csrc" / "fused_ops.cpp"
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]
_DTYPES = (torch.float32, torch.bfloat16)


def _name() -> str:
    """The module's name: a ``-march=native`` build is only reused where it runs (and for its flags and source)."""
    return f"heron_fused_ops_{cpu_flags_digest(' '.join(_CFLAGS).encode(), _SOURCE.read_bytes())}"


_EXT = NativeExtension(_name, [_SOURCE], _CFLAGS, openmp=True)


def load_fused_ops() -> ModuleType | None:
    """The compiled ops (built on the first call), or None where they are off or fail to build (logged once)."""
    if _EXT.module is not None:
        return _EXT.module
    if _EXT.error is not None or os.environ.get("HERON_FUSED_OPS", "1") == "0":  # opt out: see the module docstring
        return None
    try:  # a missing source (a wheel without it) or compiler: fall back to torch
        return _EXT.load()
    except Exception:  # noqa: BLE001 - any build failure falls back to torch
        log.warning("heron's fused C++ ops did not build; using the torch formulas", exc_info=True)
        return None


def fused_available() -> bool:
    """Whether the C++ ops are built and on."""
    return load_fused_ops() is not None


def _takes(*tensors: torch.Tensor) -> ModuleType | None:
    """The extension when it can run on ``tensors`` (CPU, fp32/bf16, no autograd), else None."""
    ext = _EXT.module or load_fused_ops()  # called per layer per step: the cheap checks
    if ext is None or torch.is_grad_enabled():
        return None
    for t in tensors:
        if not t.is_cpu or t.dtype not in _DTYPES:
            return None
    return ext


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual``, then ``(weight * rms_norm(s), s)``; x, residual: [T, H], weight: [H], one dtype.

    The norm's statistics are in fp32; the normed value is cast to the dtype before the weight
    multiplies it (transformers' ``LlamaRMSNorm``).
    """
    ext = _takes(x, residual, weight) if x.dim() == 2 and x.dtype == residual.dtype == weight.dtype else None
    if ext is not None and x.stride(-1) == 1 and residual.stride(-1) == 1 and x.shape == residual.shape:
        y, s = ext.add_rms_norm(x, residual, weight, eps)
        return y, s
    s = x + residual
    s32 = s.float()
    y = s32 * torch.rsqrt(s32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(s.dtype), s


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * rms_norm(x)`` over the last dimension, ``x`` [..., H] and ``weight`` [H] in one dtype.

    As :func:`add_rms_norm`: the normed value is cast to the dtype before the weight multiplies it
    (transformers' ``LlamaRMSNorm``; :func:`torch.nn.functional.rms_norm` instead rounds once, after
    the weight, and so differs from the checkpoint's reference in a quarter of bf16 elements).
    """
    ext = _takes(x, weight)
    if ext is not None and x.stride(-1) == 1 and x.numel():
        return ext.rms_norm(x.reshape(-1, x.shape[-1]), weight, eps).view(x.shape)
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


def argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(dim=-1)`` of logits ``x`` [T, V]: the first largest value's index per row (a NaN's, the
    first, where a row has one), int64 [T]. torch's bfloat16 argmax widens one element at a time
    (7.6 ms for 64 rows of the bundled model's 49152-word vocabulary, a tenth of a batch-64 decode
    step); the C++ one reads 64 values a step. Both compare exactly, so they give the same indices."""
    ext = _EXT.module or load_fused_ops()  # an index has no gradient: grad mode may be on
    if (ext is not None and x.is_cpu and x.dtype in _DTYPES and not x.requires_grad and x.dim() == 2 and x.shape[1]
            and x.stride(-1) == 1):
        return ext.argmax_rows(x)
    return x.argmax(dim=-1)


def native_addresses() -> tuple[int, int, int] | None:
    """The addresses of the C++ ``rms_norm``, ``add_rms_norm`` and ``rotate_heads`` (the signatures in
    ``csrc/fused_ops.cpp``), for callers in C++ that run what :func:`rms_norm`, :func:`add_rms_norm` and
    :func:`rotate_heads_fused` run; None where the ops are off or did not build."""
    ext = load_fused_ops()
    return None if ext is None else tuple(int(a) for a in ext.addresses())  # type: ignore[return-value]


def rotate_heads_fused(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor | None:
    """The C++ rotation of ``x`` [T, heads, D] by ``cos``/``sin`` [T, 1, rd] (sin sign-folded), or None
    when the op cannot take these tensors (the caller then runs the torch formula)."""
    ext = _takes(x, cos, sin)
    if ext is None or x.dim() != 3 or x.stride(-1) != 1 or cos.dtype != x.dtype or sin.dtype != x.dtype:
        return None
    return ext.rotate_heads(x, cos, sin)
