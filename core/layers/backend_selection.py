"""Choose the attention backend: an operator's explicit name, or ``auto`` = first that fits.

Backends are reached only through the ``attention_backends`` registry; ``auto`` asks each that
declares a ``priority`` (highest first, equal priorities in name order) whether it supports the
model on this device and dtype, and says why it chose. Core names no backend: the order comes
from what the plugins declare, and a third-party backend that displaces a built-in one that
would have served is reported in the log.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from heron.interfaces import AttentionBackend
from heron.plugins import registry
from heron.plugins.ranking import rank, replacement_note

__all__ = ("UnsupportedBackendError", "backend_preference", "select_attention_backend")

log = logging.getLogger(__name__)


class UnsupportedBackendError(ValueError):
    """The named backend cannot serve this model on this device/dtype."""


def backend_preference(names: list[str] | None = None) -> list[str]:
    """The backends ``auto`` tries, in order: declared priority, highest first, ties by name.

    Backends that declare no priority, or fail to load, are not tried. ``names`` restricts the
    answer to those names (default: every installed or registered backend).
    """
    return [c.name for c in rank("attention_backends").candidates if names is None or c.name in names]


def select_attention_backend(
    name: str,
    device: torch.device | str,
    dtype: torch.dtype,
    head_size: int,
    sliding_window: int | None = None,
    **features: Any,
) -> tuple[type[AttentionBackend], str]:
    """Pick the attention backend class.

    Args:
        name: a registered backend name, or ``"auto"``.
        device, dtype, head_size, sliding_window: what the model needs.
        **features: further needs passed to ``supports`` (e.g. ``logits_soft_cap=30.0``).
    Returns:
        (backend class, one sentence saying why it was chosen).
    Raises:
        UnsupportedBackendError: the named backend does not support the model, or none does.
    """
    device = torch.device(device)
    if name != "auto":
        cls = registry("attention_backends").load(name)  # UnknownPluginError lists the installed ones
        why_not = cls.supports(device, dtype, head_size, sliding_window, **features)
        if why_not is not None:
            raise UnsupportedBackendError(
                f"Attention backend {name!r} cannot serve this model: {why_not}. "
                "Pick another with --attention-backend (or 'auto')."
            )
        return cls, f"{name!r} was requested and supports {device.type}/{dtype}"

    def fits(cls: Any) -> bool:
        return cls.supports(device, dtype, head_size, sliding_window, **features) is None

    ranking = rank("attention_backends")
    rejected = list(ranking.failed)
    for candidate in ranking.candidates:
        why_not = candidate.plugin.supports(device, dtype, head_size, sliding_window, **features)
        if why_not is not None:
            rejected.append(f"{candidate.name}: {why_not}")
            log.info("attention backend %r skipped: %s", candidate.name, why_not)
            continue
        reason = (f"auto chose {candidate.describe()}, the first backend by priority supporting "
                  f"{device.type}/{dtype}, head_size {head_size}")
        if rejected:
            reason += f" (skipped {'; '.join(rejected)})"
        note = replacement_note("attention_backends", ranking.candidates, candidate, fits)
        if note:
            reason += f"; {note}"
        log.info(reason)
        return candidate.plugin, reason
    if ranking.unranked:
        rejected.append(f"not tried by auto (no declared priority): {', '.join(ranking.unranked)}")
    raise UnsupportedBackendError(
        "No installed attention backend supports this model: " + ("; ".join(rejected) or "none installed") + "."
    )
