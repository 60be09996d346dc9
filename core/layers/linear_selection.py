"""Choose a linear kernel (``--linear-kernel``) and swap it into a loaded model.

Kernels are reached only through the ``linear_kernels`` registry. ``auto`` tries the installed
kernels that declare themselves ``exact`` (same results as ``F.linear``) and declare a
``priority``, highest first (equal priorities in name order), and takes the first that supports
the device and dtype; quantizing kernels change the numbers, so they run only when named. For a
checkpoint stored as quantized blocks (``stored_format``), ``auto`` first tries the kernels that compute
on that format (:attr:`LinearKernel.stored_formats`), by priority: they run the file's own numbers
rather than a dequantized copy. Core names no kernel; a third-party kernel that displaces a built-in
one is reported in the log.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from heron.interfaces import LinearKernel
from heron.layers.parallel import ParallelOutput
from heron.plugins import registry
from heron.plugins.ranking import rank, replacement_note

__all__ = ("UnsupportedLinearKernelError", "apply_linear_kernel", "keeps_stored", "select_linear_kernel")

log = logging.getLogger(__name__)


class UnsupportedLinearKernelError(ValueError):
    """The named linear kernel cannot run on this device/dtype."""


def keeps_stored(kernel: type[LinearKernel], stored_format: str | None) -> bool:
    """Whether ``kernel`` computes on a checkpoint stored as ``stored_format`` (load it with its blocks kept)."""
    return stored_format is not None and stored_format in getattr(kernel, "stored_formats", ())


def _named(name: str, device: torch.device, dtype: torch.dtype,
           stored_format: str | None) -> tuple[type[LinearKernel], str]:
    cls = registry("linear_kernels").load(name)
    why_not = cls.supports(device, dtype)
    if why_not is None and getattr(cls, "stored_formats", ()) and not keeps_stored(cls, stored_format):
        why_not = (f"it computes on checkpoints stored as {'/'.join(cls.stored_formats)} blocks, and this one is "
                   f"{'stored as ' + stored_format if stored_format else 'not quantized'}")
    if why_not is not None:
        raise UnsupportedLinearKernelError(
            f"Linear kernel {name!r} cannot run here: {why_not}. Pick another with --linear-kernel (or 'auto')."
        )
    return cls, f"{name!r} was requested"


def select_linear_kernel(name: str, device: torch.device | str, dtype: torch.dtype,
                         stored_format: str | None = None) -> tuple[type[LinearKernel], str]:
    """(kernel class, why it was chosen) for ``name`` (a registered name or ``"auto"``).

    ``stored_format``: the checkpoint's (``Checkpoint.stored_format``, e.g. ``"gguf"``); ``auto`` prefers a
    kernel computing on it, and a kernel named for a format the checkpoint is not stored in is refused.
    """
    device = torch.device(device)
    if name != "auto":
        return _named(name, device, dtype, stored_format)

    def fits(cls: Any) -> bool:
        return (bool(cls.exact) or keeps_stored(cls, stored_format)) and cls.supports(device, dtype) is None

    ranking = rank("linear_kernels")
    skipped = list(ranking.failed)
    # kernels computing on the checkpoint's stored blocks first, then the exact ones (each by priority)
    candidates = sorted(ranking.candidates, key=lambda c: not keeps_stored(c.plugin, stored_format))
    for candidate in candidates:
        stored = keeps_stored(candidate.plugin, stored_format)
        if not candidate.plugin.exact and not stored:
            skipped.append(f"{candidate.name}: not exact (auto never picks a kernel that changes the numbers)")
            continue
        why_not = candidate.plugin.supports(device, dtype)
        if why_not is not None:
            skipped.append(f"{candidate.name}: {why_not}")
            continue
        reason = f"auto chose {candidate.describe()} for {device.type}/{dtype}"
        if stored:
            reason += f" (it computes on the checkpoint's stored {stored_format} blocks)"
        if skipped:
            reason += f" (skipped {'; '.join(skipped)})"
        note = replacement_note("linear_kernels", candidates, candidate, fits)
        if note:
            reason += f"; {note}"
        return candidate.plugin, reason
    if ranking.unranked:
        skipped.append(f"not tried by auto (no declared priority): {', '.join(ranking.unranked)}")
    raise UnsupportedLinearKernelError("No installed linear kernel runs here: " + ("; ".join(skipped) or "none installed")
                                       + ".")


def apply_linear_kernel(model: nn.Module, kernel: LinearKernel) -> int:
    """Replace every ``nn.Linear`` of ``model`` with ``kernel.convert(...)``; returns how many changed.

    A tensor-parallel layer's collective (``tp_output``: the all-reduce of a row-parallel layer,
    the gather of a parallel LM head) is kept around the kernel's module."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    changed = 0
    with torch.no_grad():
        for name, linear in targets:
            replacement = kernel.convert(linear, name)
            if replacement is linear:
                continue
            for attr in ("spans", "full_sizes", "in_span"):  # the tensor-parallel split: LoRA slices adapters by it
                if hasattr(linear, attr) and not hasattr(replacement, attr):
                    setattr(replacement, attr, getattr(linear, attr))
            collective = getattr(linear, "tp_output", None)  # a tensor-parallel layer's all-reduce/gather
            if collective is not None:
                replacement = ParallelOutput(replacement, collective)
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, replacement)
            changed += 1
    return changed
