"""Instantiate the model plugin that serves a checkpoint (see :mod:`heron.loader.model_impl`), and load its weights."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from heron.interfaces import CausalLM, ModelContext
from heron.loader.checkpoint import Checkpoint
from heron.loader.model_impl import choose_model_impl
from heron.plugins import registry

__all__ = ("build_model", "skip_init")

log = logging.getLogger("heron.loader")

_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Make ``torch.nn.init`` a no-op while modules are built: their weights are overwritten by
    the checkpoint anyway, and random init of a large embedding is slow on CPU."""

    def keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}
    try:
        for name in saved:
            setattr(nn.init, name, keep)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_model(checkpoint: Checkpoint, ctx: ModelContext, model_impl: str = "auto", *,
                keep_stored: bool = False) -> CausalLM:
    """Build the model that serves ``checkpoint`` and load its weights.

    ``model_impl`` picks the implementation: ``auto`` (heron's plugin for ``architectures[0]`` when one is
    registered, else the transformers fallback), ``heron`` (alias ``vllm``) or ``transformers``. Parameters are
    created directly on ``ctx.device`` in ``ctx.dtype`` without random init. ``keep_stored`` (the linear kernel
    computes on the checkpoint's quantized blocks) loads quantized matrices as their blocks: the
    tensor-parallel layers keep them on their parameters (``param.stored``) instead of floats.

    Raises:
        ValueError: an unknown ``model_impl``, or a config that names no architecture.
        RemoteCodeError: the transformers fallback would need code shipped with the checkpoint.
        UnknownPluginError: no installed model plugin serves the architecture (lists those that do).
    """
    config = checkpoint.hf_config
    name, why = choose_model_impl(config, model_impl, checkpoint.path)
    cls = registry("models").load(name)
    log.info("model implementation: %s.%s (%s)", cls.__module__, cls.__qualname__, why)
    with torch.device(ctx.device), _default_dtype(ctx.dtype), skip_init():
        model = cls(config, ctx)
    model.load_weights(checkpoint.weights(quantized=True) if keep_stored else checkpoint.weights())
    return model.eval()
