"""Lifecycle hooks (pluggy): what a ``heron.hooks`` plugin may implement.

A hook plugin is a module (or object) whose functions are decorated with
:data:`hookimpl` and named after a hookspec below. All installed hook plugins are
loaded through the ``hooks`` registry, except those named in ``HERON_DISABLE_PLUGINS``
(comma-separated) or passed to :func:`plugin_manager` as ``disabled``. Every hook is
called for all implementations; return values are ignored and a failing hook is logged,
never allowed to take the server down.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pluggy

__all__ = (
    "HeronHookSpecs",
    "call_hook",
    "disabled_plugins",
    "hookimpl",
    "hookimpl_names",
    "hookspec",
    "plugin_manager",
    "reset_plugin_manager",
)

PROJECT = "heron"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
logger = logging.getLogger(__name__)


class HeronHookSpecs:
    """The lifecycle hooks. Implementations take any subset of the named arguments."""

    @hookspec
    def heron_engine_started(self, engine: Any, config: Any) -> None:
        """Fires once, after the model is loaded and the KV cache allocated, before any request.

        Args:
            engine: the engine object (offline ``LLMEngine``); read-only use is expected.
            config: the resolved ``EngineConfig`` (model path, dtype, cache sizes, backend).
        """

    @hookspec
    def heron_server_started(self, app: Any, settings: Any) -> None:
        """Fires once, when the HTTP server has started and is about to accept connections.

        Args:
            app: the Litestar application.
            settings: the resolved server settings (host, port, served model names, parsers).
        """

    @hookspec
    def heron_request_finished(self, request_id: str, output: Any, metrics: Any) -> None:
        """Fires in the engine thread each time a request finishes (stop, length or abort).

        Args:
            request_id: the engine's request id.
            output: the final ``RequestOutput``.
            metrics: the request's timing/token counters (``RequestMetrics``), or None.
        Keep it cheap: it runs on the engine's critical path.
        """

    @hookspec
    def heron_shutdown(self, reason: str) -> None:
        """Fires once when the engine or server shuts down.

        Args:
            reason: why, e.g. ``"sigterm"``, ``"engine_error"``, ``"closed"``.
        """


def hookimpl_names(obj: Any) -> list[str]:
    """Names of heron hooks that ``obj`` implements (functions carrying :data:`hookimpl`)."""
    specs = {n for n in dir(HeronHookSpecs) if n.startswith("heron_")}
    marker = f"{PROJECT}_impl"
    return [n for n in specs if hasattr(getattr(obj, n, None), marker)]


def disabled_plugins(extra: list[str] | None = None) -> set[str]:
    """Hook plugin names disabled by ``HERON_DISABLE_PLUGINS=a,b`` and by ``extra``."""
    env = os.environ.get("HERON_DISABLE_PLUGINS", "")
    names = {n.strip() for n in env.split(",") if n.strip()}
    return names | set(extra or ())


_PM: pluggy.PluginManager | None = None
_PM_LOCK = threading.Lock()


def plugin_manager(disabled: list[str] | None = None) -> pluggy.PluginManager:
    """The process-wide plugin manager with every enabled hook plugin registered.

    The first call decides which plugins are disabled; later calls return the same manager.
    """
    global _PM
    with _PM_LOCK:
        if _PM is not None:
            return _PM
        from heron.plugins.registry import PluginLoadError, registry

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(HeronHookSpecs)
        off = disabled_plugins(disabled)
        hooks = registry("hooks")
        for name in hooks.names():
            if name in off:
                logger.info("hook plugin %r disabled", name)
                continue
            try:
                pm.register(hooks.load(name), name=name)
            except PluginLoadError as err:
                logger.error("%s", err)
        _PM = pm
        return pm


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests use this after registering hook plugins)."""
    global _PM
    with _PM_LOCK:
        _PM = None


def call_hook(name: str, **kwargs: Any) -> None:
    """Call hook ``name`` on every enabled plugin; failures are logged, not raised."""
    try:
        getattr(plugin_manager().hook, name)(**kwargs)
    except Exception:
        logger.exception("hook %s failed", name)
