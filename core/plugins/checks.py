"""Interface checks applied to every plugin when it is loaded or registered.

Each check returns ``None`` when the object is acceptable, else one sentence saying why not.
Heavy interfaces (torch-based) are imported only when a plugin of that kind is checked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ("CHECKS",)


def _subclass_of(path: str, attr: str) -> Callable[[Any], str | None]:
    def check(obj: Any) -> str | None:
        import importlib

        base = getattr(importlib.import_module(path), attr)
        if not (inspect.isclass(obj) and issubclass(obj, base)):
            return f"{obj!r} is not a subclass of {base.__module__}.{base.__qualname__}"
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            return f"{obj.__qualname__} leaves abstract methods unimplemented: {missing}"
        return None

    return check


def _callable_factory(obj: Any) -> str | None:
    if not callable(obj):
        return f"{obj!r} is not callable; a middleware plugin is a factory (settings) -> middleware"
    return None


def _hook_module(obj: Any) -> str | None:
    from heron.plugins.hooks import hookimpl_names

    if not isinstance(obj, ModuleType | type) and not hasattr(obj, "__dict__"):
        return f"{obj!r} is not a module or object holding hook implementations"
    if not hookimpl_names(obj):
        return f"{obj!r} implements none of heron's hooks (decorate functions with heron.plugins.hookimpl)"
    return None


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "tool_parsers": _subclass_of("heron.interfaces.tool_parser", "ToolParser"),
    "reasoning_parsers": _subclass_of("heron.interfaces.reasoning_parser", "ReasoningParser"),
    "models": _subclass_of("heron.interfaces.model", "CausalLM"),
    "attention_backends": _subclass_of("heron.interfaces.attention", "AttentionBackend"),
    "linear_kernels": _subclass_of("heron.interfaces.linear", "LinearKernel"),
    "middlewares": _callable_factory,
    "hooks": _hook_module,
}
