"""The only part of heron that reads entry points: named registries and lifecycle hooks."""

from heron.plugins.hooks import (
    HeronHookSpecs,
    call_hook,
    disabled_plugins,
    hookimpl,
    plugin_manager,
    reset_plugin_manager,
)
from heron.plugins.registry import (
    GROUPS,
    PluginInfo,
    PluginLoadError,
    Registry,
    UnknownPluginError,
    registry,
)

__all__ = (
    "GROUPS",
    "HeronHookSpecs",
    "PluginInfo",
    "PluginLoadError",
    "Registry",
    "UnknownPluginError",
    "call_hook",
    "disabled_plugins",
    "hookimpl",
    "plugin_manager",
    "registry",
    "reset_plugin_manager",
)
