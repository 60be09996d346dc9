"""Choose a linear kernel (``--linear-kernel``) and swap it into a loaded model.

Kernels are reached only through the ``linear_kernels`` registry. ``auto`` takes the first
kernel in :data:`PREFERRED` that supports the device and dtype, then any other installed kernel
that declares itself ``exact`` (same results as ``F.linear``); quantizing kernels such as
``int4`` change the numbers, so they run only when named.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from heron.interfaces import LinearKernel
from heron.plugins import PluginLoadError, registry

__all__ = ("UnsupportedLinearKernelError", "apply_linear_kernel", "select_linear_kernel")

log = logging.getLogger(__name__)

#: tried first by ``auto``; ``dense`` (plain F.linear) is the fallback
PREFERRED = ("onednn",)
_LAST = "dense"


class UnsupportedLinearKernelError(ValueError):
    """The named linear kernel cannot run on this device/dtype."""


def select_linear_kernel(name: str, device: torch.device | str, dtype: torch.dtype) -> tuple[type[LinearKernel], str]:
    """(kernel class, why it was chosen) for ``name`` (a registered name or ``"auto"``)."""
    device = torch.device(device)
    reg = registry("linear_kernels")
    if name != "auto":
        cls = reg.load(name)
        why_not = cls.supports(device, dtype)
        if why_not is not None:
            raise UnsupportedLinearKernelError(
                f"Linear kernel {name!r} cannot run here: {why_not}. Pick another with --linear-kernel (or 'auto')."
            )
        return cls, f"{name!r} was requested"
    names = reg.names()
    order = [n for n in PREFERRED if n in names] + sorted(n for n in names if n not in PREFERRED and n != _LAST)
    skipped: list[str] = []
    for candidate in [*order, _LAST]:
        try:
            cls = reg.load(candidate)
        except PluginLoadError as err:
            skipped.append(f"{candidate}: failed to load ({str(err).splitlines()[0]})")
            continue
        if not cls.exact and candidate != _LAST:
            continue
        why_not = cls.supports(device, dtype)
        if why_not is None:
            return cls, f"auto chose {candidate!r} for {device.type}/{dtype}" + (
                f" (skipped {'; '.join(skipped)})" if skipped else "")
        skipped.append(f"{candidate}: {why_not}")
    raise UnsupportedLinearKernelError("No installed linear kernel runs here: " + "; ".join(skipped) + ".")


def apply_linear_kernel(model: nn.Module, kernel: LinearKernel) -> int:
    """Replace every ``nn.Linear`` of ``model`` with ``kernel.convert(...)``; returns how many changed."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    changed = 0
    with torch.no_grad():
        for name, linear in targets:
            replacement = kernel.convert(linear, name)
            if replacement is linear:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, replacement)
            changed += 1
    return changed
