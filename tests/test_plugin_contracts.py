"""Every declared entry point, built-in or installed, loads and satisfies its interface.

Parametrized over the installed metadata, so a new plugin is tested the moment it is registered.
"""

from __future__ import annotations

import pytest

from heron.plugins import GROUPS, registry

DECLARED = [(kind, name) for kind in GROUPS for name in registry(kind).names()]


def test_built_in_plugins_are_declared():
    names = {name for _, name in DECLARED}
    assert {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "torch_sdpa", "eager"} <= names


@pytest.mark.parametrize(("kind", "name"), DECLARED, ids=[f"{k}:{n}" for k, n in DECLARED])
def test_entry_point_loads_and_meets_its_interface(kind, name):
    plugin = registry(kind).load(name)  # raises PluginLoadError with the real traceback
    assert plugin is not None
    assert name not in registry(kind).errors()
