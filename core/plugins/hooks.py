"""Lifecycle hooks (pluggy): what a ``heron.hooks`` plugin may implement, and how it is called.

A hook plugin is a module (or object) whose functions are decorated with :data:`hookimpl` and
named after a hookspec below. All installed hook plugins are loaded through the ``hooks``
registry, except those named in ``HERON_DISABLE_PLUGINS`` (comma-separated) or passed to
:func:`plugin_manager` as ``disabled``. A plugin that fails to import or to validate (an unknown
hook name, an argument the hook does not pass) is logged by name and skipped; the others load.
:func:`call_hook` calls every implementation on its own: one that raises is logged with its
plugin's name and the others still run. Return values are ignored.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import threading
from typing import Any

import pluggy

__all__ = (
    "HeronHookSpecs",
    "call_hook",
    "disabled_plugins",
    "hook_problems",
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
_MARKER = f"{PROJECT}_impl"  # the attribute pluggy's HookimplMarker sets on a decorated function


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
            output: the request's last ``RequestOutput`` — a delta (only what is new since the
                previous output); ``finish_reason`` may be ``"error"`` when handling the request
                failed (``output.error`` says why). Totals are in ``metrics``.
            metrics: the request's timing/token counters (``RequestMetrics``), or None.
        Keep it cheap: it runs on the engine's critical path.
        """

    @hookspec
    def heron_shutdown(self, reason: str) -> None:
        """Fires once when the engine or server shuts down.

        Args:
            reason: why, e.g. ``"sigterm"``, ``"engine_error"``, ``"closed"``.
        """


def _spec_arguments() -> dict[str, tuple[str, ...]]:
    """Hook name -> the argument names heron passes to it."""
    return {
        name: tuple(inspect.signature(getattr(HeronHookSpecs, name)).parameters)[1:]  # drop self
        for name in dir(HeronHookSpecs)
        if name.startswith("heron_")
    }


def hookimpl_names(obj: Any) -> list[str]:
    """Names of heron hooks that ``obj`` implements (functions carrying :data:`hookimpl`)."""
    specs = _spec_arguments()
    return [n for n in specs if isinstance(getattr(getattr(obj, n, None), _MARKER, None), dict)]


def _argument_names(function: Any) -> list[str]:
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return []
    if params and params[0].name in ("self", "cls") and not inspect.ismethod(function):
        params = params[1:]  # an unbound method of a plugin class
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def hook_problems(obj: Any) -> list[str]:
    """What is wrong with ``obj`` as a hook plugin, one sentence per problem (empty when fine).

    Checks every :data:`hookimpl`-decorated attribute against :class:`HeronHookSpecs`: the hook
    name exists, every argument is one heron passes, no wrapper; and that a function named like
    a hook carries the decorator.
    """
    specs = _spec_arguments()
    problems: list[str] = []
    valid = 0
    for attr in sorted(dir(obj)):
        try:
            value = getattr(obj, attr)
        except Exception:  # a property or module __getattr__ that raises is not a hook
            continue
        opts = getattr(value, _MARKER, None)
        if not isinstance(opts, dict):
            if attr in specs and callable(value):
                problems.append(f"{attr} is not decorated with @heron.plugins.hookimpl, so it would never be called")
            continue
        hook = opts.get("specname") or attr
        if hook not in specs:
            hint = _did_you_mean(hook, specs) or f"; heron's hooks are {', '.join(sorted(specs))}"
            problems.append(f"{hook!r} is not a heron hook{hint}")
            continue
        if opts.get("hookwrapper") or opts.get("wrapper"):
            problems.append(f"{hook} is declared as a hook wrapper; heron calls each implementation on its own, "
                            "so drop wrapper=/hookwrapper=")
            continue
        bad = [a for a in _argument_names(value) if a not in specs[hook]]
        for arg in bad:
            problems.append(f"{hook}() is given no argument {arg!r}{_did_you_mean(arg, specs[hook])} "
                            f"(it passes {', '.join(specs[hook])})")
        valid += not bad
    if not problems and not valid:
        problems.append(f"{obj!r} implements none of heron's hooks (decorate functions with heron.plugins.hookimpl)")
    return problems


def disabled_plugins(extra: list[str] | None = None) -> set[str]:
    """Hook plugin names disabled by ``HERON_DISABLE_PLUGINS=a,b`` and by ``extra``."""
    env = os.environ.get("HERON_DISABLE_PLUGINS", "")
    names = {n.strip() for n in env.split(",") if n.strip()}
    return names | set(extra or ())


_PM: pluggy.PluginManager | None = None
_PM_LOCK = threading.Lock()


def plugin_manager(disabled: list[str] | None = None) -> pluggy.PluginManager:
    """The process-wide plugin manager with every enabled, valid hook plugin registered.

    The first call decides which plugins are disabled; later calls return the same manager. A
    plugin that fails to load or validate is logged with its name and left out; it never keeps
    the other plugins from loading.
    """
    global _PM
    pm = _PM
    if pm is not None:
        return pm
    with _PM_LOCK:
        if _PM is not None:
            return _PM
        from heron.plugins.registry import registry

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(HeronHookSpecs)
        off = disabled_plugins(disabled)
        hooks = registry("hooks")
        for name in hooks.names():
            if name in off:
                logger.info("hook plugin %r disabled", name)
                continue
            try:
                pm.register(hooks.load(name), name=name)  # load() validates with hook_problems
            except Exception as err:  # PluginLoadError, pluggy's PluginValidationError, ...
                logger.error("hook plugin %r skipped: %s", name, str(err).strip())
        _PM = pm
        return pm


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests use this after registering hook plugins)."""
    global _PM
    with _PM_LOCK:
        _PM = None


def call_hook(name: str, **kwargs: Any) -> None:
    """Call hook ``name`` on every enabled plugin, each implementation on its own.

    Implementations run in pluggy's order (``tryfirst``/``trylast`` honoured, otherwise the last
    registered first). One that raises is logged with its plugin's name; the rest still run.
    """
    try:
        caller = getattr(plugin_manager().hook, name)
    except Exception:
        logger.exception("hook %s cannot be called", name)
        return
    for impl in reversed(caller.get_hookimpls()):
        try:
            args = [kwargs[a] for a in impl.argnames]
            extra = {a: kwargs[a] for a in getattr(impl, "kwargnames", ()) if a in kwargs}
            impl.function(*args, **extra)
        except Exception:
            logger.exception("hook %s failed in plugin %r", name, impl.plugin_name)
