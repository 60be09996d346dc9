"""Interface checks applied to every plugin when it is loaded or registered.

Each check returns ``None`` when the object is acceptable, else what is wrong: one sentence per
problem, one problem per line. Heavy interfaces (torch-based) are imported only when a plugin of
that kind is checked. Middleware factories are called once, with default server settings, so a
factory that returns nothing usable fails here (and in ``heron plugins doctor``), not at serve time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ("CHECKS", "middleware_from")


def _subclass_of(path: str, attr: str, *, ranked: bool = False, alt: tuple[str, str] | None = None
                 ) -> Callable[[Any], str | None]:
    """A check that the plugin is a concrete subclass of ``path.attr`` (or of ``alt``, another (path, attr))."""

    def check(obj: Any) -> str | None:
        import importlib

        bases = [getattr(importlib.import_module(p), a) for p, a in ((path, attr), *([alt] if alt else []))]
        if not (inspect.isclass(obj) and issubclass(obj, tuple(bases))):
            names = " or ".join(f"{base.__module__}.{base.__qualname__}" for base in bases)
            return f"{obj!r} is not a subclass of {names}"
        if inspect.isabstract(obj):
            missing = ", ".join(sorted(obj.__abstractmethods__))
            return f"{obj.__qualname__} leaves abstract methods unimplemented: {missing}"
        priority = getattr(obj, "priority", None)
        if ranked and priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            return (f"{obj.__qualname__}.priority is {priority!r}; declare an int (higher is tried first by "
                    "'auto') or None (only used when named)")
        return None

    return check


async def _probe_app(scope: Any, receive: Any, send: Any) -> None:  # the app a middleware is asked to wrap
    return None


def middleware_from(factory: Any, settings: Any) -> tuple[Any, str | None]:
    """Call a middleware ``factory`` once: ``(middleware, None)``, or ``(None, why it is unusable)``.

    Usable means what the factory returns is callable as ``middleware(app=asgi_app)`` and gives
    back a callable ASGI app (a plain ``app -> app`` function, a ``DefineMiddleware``, a
    ``MiddlewareProtocol`` class or an ``ASGIMiddleware`` instance all are).
    """
    try:
        made = factory(settings)
    except Exception as err:
        return None, f"calling the factory with the server settings raised {type(err).__name__}: {err}"
    if made is None:
        return None, ("the factory returned None; it must return an ASGI middleware, a callable taking app= "
                      "and returning the wrapped ASGI app")
    if not callable(made):
        return None, (f"the factory returned a {type(made).__name__}, which is not an ASGI middleware "
                      "(a callable taking app= and returning the wrapped ASGI app)")
    try:
        wrapped = made(app=_probe_app)
    except Exception as err:
        return None, f"the middleware it returned cannot wrap an app: middleware(app=...) raised {type(err).__name__}: {err}"
    if not callable(wrapped):
        return None, (f"middleware(app=...) returned a {type(wrapped).__name__}, not an ASGI app "
                      "(an async callable taking scope, receive, send)")
    return made, None


def _middleware_factory(obj: Any) -> str | None:
    if not callable(obj):
        return f"{obj!r} is not callable; a middleware plugin is a factory (settings) -> middleware"
    from heron.server.settings import ServerSettings

    _, problem = middleware_from(obj, ServerSettings())
    return f"with default ServerSettings(), {problem}" if problem else None


def _hook_module(obj: Any) -> str | None:
    from heron.plugins.hooks import hook_problems

    if not isinstance(obj, ModuleType | type) and not hasattr(obj, "__dict__"):
        return f"{obj!r} is not a module or object holding hook implementations"
    return "\n".join(hook_problems(obj)) or None


def _lora_resolver(obj: Any) -> str | None:
    problem = _subclass_of("heron.interfaces.lora_resolver", "LoRAResolver")(obj)
    priority = getattr(obj, "priority", None)
    if problem is None and (isinstance(priority, bool) or not isinstance(priority, int)):
        problem = f"{obj.__qualname__}.priority is {priority!r}; declare an int (higher is asked first)"
    return problem


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "tool_parsers": _subclass_of("heron.interfaces.tool_parser", "ToolParser"),
    "reasoning_parsers": _subclass_of("heron.interfaces.reasoning_parser", "ReasoningParser"),
    "models": _subclass_of("heron.interfaces.model", "CausalLM", alt=("heron.interfaces.pooling", "PoolingModel")),
    "attention_backends": _subclass_of("heron.interfaces.attention", "AttentionBackend", ranked=True),
    "linear_kernels": _subclass_of("heron.interfaces.linear", "LinearKernel", ranked=True),
    "middlewares": _middleware_factory,
    "hooks": _hook_module,
    "response_stores": _subclass_of("heron.interfaces.response_store", "ResponseStore"),
    "lora_resolvers": _lora_resolver,
}
