"""Choose which implementation serves a checkpoint: heron's plugin for its architecture or the transformers fallback.

``--model-impl`` is ``auto`` (the architecture's plugin when one is registered, else the fallback), ``heron``
(alias ``vllm``: the plugin only) or ``transformers`` (the fallback only). The fallback is whatever model plugin
is registered under the reserved name :data:`FALLBACK`; core reaches it through the registry like any other
plugin. Checkpoints that need remote code are refused whichever implementation would serve them through
transformers: heron never runs code shipped with a checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from heron.plugins import UnknownPluginError, registry

__all__ = ("FALLBACK", "MODEL_IMPLS", "RemoteCodeError", "choose_model_impl", "needs_remote_code")

log = logging.getLogger("heron.loader")

#: the ``heron.models`` entry name reserved for the transformers fallback
FALLBACK = "transformers"
#: accepted ``--model-impl`` values (``vllm`` is an alias of ``heron``)
MODEL_IMPLS = ("auto", "heron", "transformers", "vllm")


class RemoteCodeError(ValueError):
    """The checkpoint's architecture exists only as code shipped with the checkpoint (``auto_map``)."""


def needs_remote_code(config: Any) -> str | None:
    """Why ``config`` needs code shipped with the checkpoint (None when transformers builds it itself).

    True when the config carries an ``auto_map`` and its architecture is not a class built into
    transformers, or when its config class is not transformers' own (AutoConfig could not build it).
    """
    arch = (getattr(config, "architectures", None) or [None])[0]
    auto_map = getattr(config, "auto_map", None)
    if not type(config).__module__.startswith("transformers."):
        return f"its config class {type(config).__name__} is not built into transformers"
    if auto_map and (arch is None or not _builtin_class(_transformers(), arch)):
        return f"its architecture {arch!r} is defined by code shipped with the checkpoint (auto_map {auto_map})"
    return None


def _builtin_class(module: Any, name: str) -> bool:
    try:
        return isinstance(getattr(module, name, None), type)
    except (ImportError, RuntimeError):  # the lazy module failed to import that model's file
        return False


def choose_model_impl(config: Any, model_impl: str, path: str) -> tuple[str, str]:
    """The model-plugin name to load for ``config`` and why (one sentence, for the log).

    Raises:
        ValueError: ``model_impl`` is not one of :data:`MODEL_IMPLS`, or the config names no architecture.
        RemoteCodeError: the transformers fallback would serve a checkpoint that needs remote code.
        UnknownPluginError: no plugin serves the architecture (``heron``/``vllm``), or neither a plugin nor
            transformers does (``auto``).
    """
    if model_impl not in MODEL_IMPLS:
        raise ValueError(f"Unknown model implementation {model_impl!r}; choose one of {', '.join(MODEL_IMPLS)}.")
    archs = getattr(config, "architectures", None) or []
    if not archs:
        raise ValueError(f"The config of {path} names no architecture; heron cannot pick a model.")
    arch = archs[0]
    models = registry("models")
    if model_impl in ("heron", "vllm"):
        return arch, f"--model-impl {model_impl}: heron's {arch} plugin"
    if model_impl == "auto" and arch != FALLBACK and arch in models.names():
        return arch, f"--model-impl auto: heron has a {arch} plugin"
    why_remote = needs_remote_code(config)
    if why_remote is not None:
        hint = "" if model_impl == "transformers" else f" and no heron plugin serves {arch}"
        raise RemoteCodeError(
            f"{path} needs remote code ({why_remote}){hint}; heron never runs checkpoint code, whatever "
            "--trust-remote-code says: install a heron model plugin for this architecture."
        )
    if not _builtin_class(_transformers(), arch):
        if model_impl == "auto":  # neither heron nor transformers knows it: list what is installed
            raise UnknownPluginError("models", arch, [n for n in models.names() if n != FALLBACK])
        raise ValueError(f"transformers has no built-in class {arch!r}, so the transformers fallback cannot "
                         f"serve {path}; install a heron model plugin for it.")
    reason = "requested" if model_impl == "transformers" else f"no heron plugin serves {arch}"
    return FALLBACK, f"--model-impl {model_impl}: the transformers fallback serves {arch} ({reason})"


def _transformers() -> Any:
    import transformers

    return transformers
