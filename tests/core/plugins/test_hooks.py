"""Lifecycle hooks: discovered through the registry, callable, and disabled by name."""

from __future__ import annotations

import pytest

from heron.plugins import call_hook, plugin_manager, reset_plugin_manager
from heron.plugins.hooks import HeronHookSpecs

RECORDER = """
    from heron.plugins import hookimpl

    CALLS = []

    @hookimpl
    def heron_request_finished(request_id, output):
        CALLS.append(("finished", request_id, output))

    @hookimpl
    def heron_shutdown(reason):
        CALLS.append(("shutdown", reason))
"""


@pytest.fixture(autouse=True)
def _fresh_manager():
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_every_hookspec_is_documented():
    names = [n for n in dir(HeronHookSpecs) if n.startswith("heron_")]
    assert {"heron_engine_started", "heron_server_started", "heron_request_finished",
            "heron_shutdown"} <= set(names)
    for name in names:
        doc = getattr(HeronHookSpecs, name).__doc__ or ""
        assert "fires" in doc.lower() and "Args:" in doc, name


def test_installed_hook_plugin_is_called(fake_dist):
    import sys

    fake_dist("heron-fake-hooks", {"heron.hooks": {"recorder": "heron_fake_hooks"}},
              {"heron_fake_hooks": RECORDER})
    call_hook("heron_request_finished", request_id="r1", output="done", metrics=None)
    call_hook("heron_shutdown", reason="closed")
    assert sys.modules["heron_fake_hooks"].CALLS == [("finished", "r1", "done"), ("shutdown", "closed")]
    assert plugin_manager().get_plugin("recorder") is not None


def test_hook_plugin_disabled_by_env(fake_dist, monkeypatch):
    import sys

    fake_dist("heron-fake-hooks2", {"heron.hooks": {"recorder2": "heron_fake_hooks2"}},
              {"heron_fake_hooks2": RECORDER})
    monkeypatch.setenv("HERON_DISABLE_PLUGINS", "other, recorder2")
    call_hook("heron_shutdown", reason="closed")
    assert plugin_manager().get_plugin("recorder2") is None
    assert "heron_fake_hooks2" not in sys.modules or sys.modules["heron_fake_hooks2"].CALLS == []


def test_hook_plugin_disabled_by_argument(fake_dist):
    fake_dist("heron-fake-hooks3", {"heron.hooks": {"recorder3": "heron_fake_hooks3"}},
              {"heron_fake_hooks3": RECORDER})
    pm = plugin_manager(disabled=["recorder3"])
    assert pm.get_plugin("recorder3") is None


def test_failing_hook_is_logged_not_raised(fake_dist, caplog):
    fake_dist("heron-fake-hooks4", {"heron.hooks": {"explodes": "heron_fake_hooks4"}},
              {"heron_fake_hooks4": """
                  from heron.plugins import hookimpl

                  @hookimpl
                  def heron_shutdown(reason):
                      raise RuntimeError("hook blew up")
              """})
    call_hook("heron_shutdown", reason="closed")
    assert "hook heron_shutdown failed" in caplog.text


def test_module_without_hooks_is_refused(fake_dist):
    from heron.plugins import PluginLoadError, registry

    fake_dist("heron-fake-hooks5", {"heron.hooks": {"nohooks": "heron_fake_hooks5"}},
              {"heron_fake_hooks5": "X = 1\n"})
    with pytest.raises(PluginLoadError, match="implements none of heron's hooks"):
        registry("hooks").load("nohooks")
