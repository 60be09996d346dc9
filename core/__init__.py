"""heron: an OpenAI-compatible LLM inference server and offline inference library.

The core is small: engine, protocol models, Litestar app. Parsers, model architectures,
attention backends, middlewares and lifecycle hooks are plugins found through entry points
(see :mod:`heron.plugins`). ``LLM``, ``SamplingParams`` and ``PoolingParams`` are imported lazily so that
``import heron`` stays cheap for the CLI and for plugin discovery.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

try:
    __version__ = _metadata.version("heron")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ("LLM", "PoolingParams", "SamplingParams", "StructuredOutputsParams", "__version__")

_LAZY = {
    "LLM": "heron.engine.llm",
    "PoolingParams": "heron.engine.pooling_params",
    "SamplingParams": "heron.engine.sampling_params",
    "StructuredOutputsParams": "heron.engine.sampling_params",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'heron' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
