"""Named plugin registries backed by setuptools entry points (stevedore).

One registry per plugin kind. ``names()`` reads installed metadata only; ``load(name)`` imports
one plugin on first use, checks it against its interface and caches it for the process;
``register(name, obj)`` adds an in-process plugin (tests, notebooks); ``errors()`` returns the
load failures seen so far with their real tracebacks.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stevedore.named import NamedExtensionManager

__all__ = (
    "CORE_DISTRIBUTION",
    "GROUPS",
    "PluginInfo",
    "PluginLoadError",
    "Registry",
    "UnknownPluginError",
    "registry",
)

log = logging.getLogger(__name__)

#: the distribution that ships heron's core and its built-in plugins
CORE_DISTRIBUTION = "heron"

#: registry kind -> entry-point group
GROUPS: dict[str, str] = {
    "tool_parsers": "heron.tool_parsers",
    "reasoning_parsers": "heron.reasoning_parsers",
    "models": "heron.models",
    "attention_backends": "heron.attention_backends",
    "linear_kernels": "heron.linear_kernels",
    "middlewares": "heron.middlewares",
    "hooks": "heron.hooks",
    "response_stores": "heron.response_stores",
    "lora_resolvers": "heron.lora_resolvers",
}


class UnknownPluginError(LookupError):
    """A name that no installed or registered plugin of this kind carries."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(sorted(known)) or "(none installed)"
        super().__init__(f"Unknown {kind} plugin {name!r}.{hint} Installed: {listing}.")
        self.kind, self.name, self.known = kind, name, known
        self.suggestion = close[0] if close else None


class PluginLoadError(ImportError):
    """A plugin that is installed but failed to import or failed its interface check.

    ``problems`` holds the interface check's findings, one sentence each (empty when the import
    itself failed; ``traceback`` then holds the real traceback). An interface-check failure reads
    as one line naming the plugin.
    """

    def __init__(self, kind: str, name: str, target: str, tb: str, problems: tuple[str, ...] = ()) -> None:
        if problems:
            message = (f"The {kind} plugin {name!r} ({target}) failed its interface check: "
                       f"{'; '.join(problems)} (fix or uninstall it)")
        else:
            message = f"The {kind} plugin {name!r} ({target}) failed to load; fix or uninstall it.\n{tb}"
        super().__init__(message)
        self.kind, self.name, self.target, self.traceback = kind, name, target, tb
        self.problems = problems


@dataclass(slots=True)
class PluginInfo:
    """What installed metadata says about one entry point (no import needed)."""

    group: str
    name: str
    target: str
    distribution: str | None
    version: str | None


@dataclass
class Registry:
    """Plugins of one kind: entry points of ``group`` plus in-process registrations."""

    kind: str
    group: str
    check: Callable[[Any], str | None] | None = None
    _loaded: dict[str, Any] = field(default_factory=dict)
    _registered: dict[str, Any] = field(default_factory=dict)
    _errors: dict[str, PluginLoadError] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- discovery (metadata only) -------------------------------------------------------
    def entry_points(self) -> dict[str, PluginInfo]:
        """Installed entry points of this group, by name; imports nothing."""
        found: dict[str, PluginInfo] = {}
        for ep in md.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            found.setdefault(
                ep.name,
                PluginInfo(
                    self.group,
                    ep.name,
                    ep.value,
                    dist.metadata["Name"] if dist is not None else None,
                    dist.version if dist is not None else None,
                ),
            )
        return found

    def names(self) -> list[str]:
        """All names this registry can load, sorted; imports nothing."""
        return sorted(set(self.entry_points()) | set(self._registered))

    def origin(self, name: str) -> str:
        """Where plugin ``name`` comes from: ``"dist-name 1.0"`` or ``"registered in-process"``."""
        if name in self._registered:
            return "registered in-process"
        info = self.entry_points().get(name)
        if info is None or info.distribution is None:
            return "unknown distribution"
        return f"{info.distribution} {info.version}"

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is one of heron's own plugins (declared by the ``heron`` distribution)."""
        if name in self._registered:
            return False
        info = self.entry_points().get(name)
        dist = (info.distribution or "") if info is not None else ""
        return dist.lower().replace("_", "-") == CORE_DISTRIBUTION

    # -- loading ---------------------------------------------------------------------------
    def load(self, name: str) -> Any:
        """Import (once per process) and return the plugin object called ``name``.

        Raises:
            UnknownPluginError: nothing of this kind is called ``name``.
            PluginLoadError: the plugin exists but failed to import or is not a valid plugin.
        """
        with self._lock:
            if name in self._registered:
                return self._registered[name]
            if name in self._loaded:
                return self._loaded[name]
            if name in self._errors:
                raise self._errors[name]
            info = self.entry_points().get(name)
            if info is None:
                raise UnknownPluginError(self.kind, name, self.names())
            obj = self._import(name, info)
            self._loaded[name] = obj
            return obj

    def _import(self, name: str, info: PluginInfo) -> Any:
        failures: list[BaseException] = []
        # stevedore memoises each group's entry points per process; names() reads metadata
        # afresh, so drop that memo to let load() see plugins installed since (tests, notebooks).
        NamedExtensionManager.ENTRY_POINT_CACHE.pop(self.group, None)
        manager = NamedExtensionManager(
            self.group,
            names=[name],
            on_load_failure_callback=lambda _m, _ep, err: failures.append(err),
            on_missing_entrypoints_callback=lambda _names: None,
        )
        if failures:
            err = failures[0]
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            raise self._fail(name, info.target, tb) from err
        obj = next(ext.plugin for ext in manager.extensions if ext.name == name)
        self._warn_if_shadowed(name, obj)
        problem = self.check(obj) if self.check is not None else None
        if problem:
            problems = tuple(problem.splitlines())
            raise self._fail(name, info.target, "Interface check failed: " + "\n".join(problems), problems)
        return obj

    def _warn_if_shadowed(self, name: str, obj: Any) -> None:
        # two distributions declaring one name: which loads depends on install order, so say so
        declared = {(getattr(ep.dist, "name", None), ep.value) for ep in md.entry_points(group=self.group)
                    if ep.name == name}
        if len(declared) > 1:
            listing = ", ".join(f"{value} from {dist or '?'}" for dist, value in sorted(declared, key=str))
            log.warning("%d distributions declare the %s plugin %r (%s); using %s.%s. Uninstall the one "
                        "you do not want.", len(declared), self.kind, name, listing,
                        getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", repr(obj)))

    def _fail(self, name: str, target: str, tb: str, problems: tuple[str, ...] = ()) -> PluginLoadError:
        error = PluginLoadError(self.kind, name, target, tb, problems)
        self._errors[name] = error
        return error

    def register(self, name: str, obj: Any) -> Callable[[], None]:
        """Register ``obj`` under ``name`` in this process; returns a function that undoes it."""
        problem = self.check(obj) if self.check is not None else None
        if problem:
            raise TypeError(f"Cannot register {self.kind} plugin {name!r}: {'; '.join(problem.splitlines())}")
        with self._lock:
            self._registered[name] = obj
        return lambda: self.unregister(name)

    def unregister(self, name: str) -> None:
        """Remove an in-process registration (entry points are not affected)."""
        with self._lock:
            self._registered.pop(name, None)

    def errors(self) -> dict[str, PluginLoadError]:
        """Load failures seen so far in this process, by plugin name."""
        return dict(self._errors)

    def load_all(self) -> dict[str, Any]:
        """Try to load every plugin; returns those that loaded (failures go to ``errors()``)."""
        loaded = {}
        for name in self.names():
            try:
                loaded[name] = self.load(name)
            except PluginLoadError:
                pass
        return loaded


_REGISTRIES: dict[str, Registry] = {}
_REGISTRIES_LOCK = threading.Lock()


def registry(kind: str) -> Registry:
    """The process-wide registry for ``kind`` (one of :data:`GROUPS`)."""
    if kind not in GROUPS:
        raise UnknownPluginError("registry", kind, list(GROUPS))
    with _REGISTRIES_LOCK:
        reg = _REGISTRIES.get(kind)
        if reg is None:
            from heron.plugins.checks import CHECKS

            reg = _REGISTRIES[kind] = Registry(kind, GROUPS[kind], CHECKS.get(kind))
        return reg
