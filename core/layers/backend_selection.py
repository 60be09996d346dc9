"""Choose the attention backend: an operator's explicit name, or ``auto`` = first that fits.

Backends are reached only through the ``attention_backends`` registry; ``auto`` asks each, in
preference order, whether it supports the model on this device and dtype, and says why it chose.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from heron.interfaces import AttentionBackend
from heron.plugins import PluginLoadError, registry

__all__ = ("PREFERRED", "UnsupportedBackendError", "backend_preference", "select_attention_backend")

log = logging.getLogger(__name__)

#: tried first by ``auto``; ``eager`` (the reference implementation) is always tried last
PREFERRED = ("cpu_paged", "torch_sdpa")
_LAST = ("eager",)


class UnsupportedBackendError(ValueError):
    """The named backend cannot serve this model on this device/dtype."""


def backend_preference(names: list[str]) -> list[str]:
    """``names`` in the order ``auto`` tries them: preferred, then the others sorted, eager last."""
    first = [n for n in PREFERRED if n in names]
    last = [n for n in _LAST if n in names]
    return first + sorted(n for n in names if n not in first and n not in last) + last


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
    reg = registry("attention_backends")
    if name != "auto":
        cls = reg.load(name)  # UnknownPluginError lists the installed ones
        why_not = cls.supports(device, dtype, head_size, sliding_window, **features)
        if why_not is not None:
            raise UnsupportedBackendError(
                f"Attention backend {name!r} cannot serve this model: {why_not}. "
                "Pick another with --attention-backend (or 'auto')."
            )
        return cls, f"{name!r} was requested and supports {device.type}/{dtype}"
    rejected: list[str] = []
    for candidate in backend_preference(reg.names()):
        try:
            cls = reg.load(candidate)
        except PluginLoadError as err:
            rejected.append(f"{candidate}: failed to load ({str(err).splitlines()[0]})")
            continue
        why_not = cls.supports(device, dtype, head_size, sliding_window, **features)
        if why_not is None:
            reason = f"auto chose {candidate!r}, the first backend supporting {device.type}/{dtype}, head_size {head_size}"
            if rejected:
                reason += f" (skipped {'; '.join(rejected)})"
            log.info(reason)
            return cls, reason
        rejected.append(f"{candidate}: {why_not}")
        log.info("attention backend %r skipped: %s", candidate, why_not)
    raise UnsupportedBackendError(
        "No installed attention backend supports this model: " + ("; ".join(rejected) or "none installed") + "."
    )
