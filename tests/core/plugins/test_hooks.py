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
    assert "hook heron_shutdown failed in plugin 'explodes'" in caplog.text
    assert "hook blew up" in caplog.text  # the traceback is logged


def test_module_without_hooks_is_refused(fake_dist):
    from heron.plugins import PluginLoadError, registry

    fake_dist("heron-fake-hooks5", {"heron.hooks": {"nohooks": "heron_fake_hooks5"}},
              {"heron_fake_hooks5": "X = 1\n"})
    with pytest.raises(PluginLoadError, match="implements none of heron's hooks"):
        registry("hooks").load("nohooks")


TYPO_ARGUMENT = """
    from heron.plugins import hookimpl

    @hookimpl
    def heron_request_finished(reqest_id, output):
        pass
"""

TYPO_HOOK = """
    from heron.plugins import hookimpl

    @hookimpl
    def heron_request_finshed(request_id):
        pass

    @hookimpl
    def heron_shutdown(reason):
        pass
"""

RAISES = """
    from heron.plugins import hookimpl

    @hookimpl
    def heron_shutdown(reason):
        raise RuntimeError("boom from {name}")

    @hookimpl
    def heron_request_finished(request_id):
        raise ValueError("bad request hook")
"""


def test_invalid_hook_plugins_are_named_and_skipped_and_the_others_load(fake_dist, caplog):
    import sys

    fake_dist("heron-fake-hooks6", {"heron.hooks": {"a_typo_arg": "heron_fake_typo_arg",
                                                    "b_recorder": "heron_fake_hooks6",
                                                    "c_typo_hook": "heron_fake_typo_hook"}},
              {"heron_fake_typo_arg": TYPO_ARGUMENT, "heron_fake_hooks6": RECORDER, "heron_fake_typo_hook": TYPO_HOOK})
    pm = plugin_manager()  # what `heron serve` calls first: must not raise
    assert pm.get_plugin("b_recorder") is not None
    assert pm.get_plugin("a_typo_arg") is None and pm.get_plugin("c_typo_hook") is None
    assert "hook plugin 'a_typo_arg' skipped" in caplog.text
    assert "heron_request_finished() is given no argument 'reqest_id'; did you mean 'request_id'?" in caplog.text
    assert "hook plugin 'c_typo_hook' skipped" in caplog.text
    assert "'heron_request_finshed' is not a heron hook; did you mean 'heron_request_finished'?" in caplog.text
    # the path the offline LLM and the engine take: the valid plugin is still called
    call_hook("heron_request_finished", request_id="r9", output="out", metrics=None)
    assert sys.modules["heron_fake_hooks6"].CALLS == [("finished", "r9", "out")]


@pytest.mark.parametrize("recorder_name", ["a_first", "m_middle", "z_last"])
def test_a_raising_hook_never_silences_the_others(fake_dist, caplog, recorder_name):
    import sys

    suffix = recorder_name[0]
    fake_dist(f"heron-fake-iso-{suffix}", {"heron.hooks": {
        f"b_boom_{suffix}": f"heron_fake_iso_b_{suffix}",
        recorder_name: f"heron_fake_iso_rec_{suffix}",
        f"y_boom_{suffix}": f"heron_fake_iso_y_{suffix}",
    }}, {
        f"heron_fake_iso_b_{suffix}": RAISES.replace("{name}", "b"),
        f"heron_fake_iso_rec_{suffix}": RECORDER,
        f"heron_fake_iso_y_{suffix}": RAISES.replace("{name}", "y"),
    })
    call_hook("heron_shutdown", reason="sigterm")
    call_hook("heron_request_finished", request_id="r1", output="o", metrics=None)
    assert sys.modules[f"heron_fake_iso_rec_{suffix}"].CALLS == [("shutdown", "sigterm"), ("finished", "r1", "o")]
    for boom in (f"b_boom_{suffix}", f"y_boom_{suffix}"):
        assert f"hook heron_shutdown failed in plugin '{boom}'" in caplog.text
        assert f"hook heron_request_finished failed in plugin '{boom}'" in caplog.text
    assert "boom from b" in caplog.text and "boom from y" in caplog.text


def test_hook_problems_names_each_mistake():
    from types import SimpleNamespace

    from heron.plugins.hooks import hook_problems, hookimpl

    def heron_shutdown(reason):  # forgot the decorator
        pass

    @hookimpl(hookwrapper=True)
    def heron_engine_started(engine):
        yield

    @hookimpl(specname="heron_request_finished")
    def on_finish(request_id, outptu):
        pass

    problems = hook_problems(SimpleNamespace(heron_shutdown=heron_shutdown, heron_engine_started=heron_engine_started,
                                             on_finish=on_finish))
    assert problems == [
        "heron_engine_started is declared as a hook wrapper; heron calls each implementation on its own, "
        "so drop wrapper=/hookwrapper=",
        "heron_shutdown is not decorated with @heron.plugins.hookimpl, so it would never be called",
        "heron_request_finished() is given no argument 'outptu'; did you mean 'output'? "
        "(it passes request_id, output, metrics)",
    ]


def test_hook_plugin_object_with_methods_is_valid_and_called():
    from heron.plugins import registry
    from heron.plugins.hooks import hook_problems, hookimpl

    class Counter:
        def __init__(self):
            self.reasons = []

        @hookimpl
        def heron_shutdown(self, reason):
            self.reasons.append(reason)

    counter = Counter()
    assert hook_problems(counter) == []
    undo = registry("hooks").register("counter_object", counter)
    try:
        reset_plugin_manager()
        call_hook("heron_shutdown", reason="closed")
        assert counter.reasons == ["closed"]
    finally:
        undo()


def test_register_refuses_an_invalid_hook_plugin_with_the_reason():
    from types import SimpleNamespace

    from heron.plugins import registry
    from heron.plugins.hooks import hookimpl

    @hookimpl
    def heron_shutdwon(reason):
        pass

    with pytest.raises(TypeError, match="'heron_shutdwon' is not a heron hook; did you mean 'heron_shutdown'"):
        registry("hooks").register("typo_object", SimpleNamespace(heron_shutdwon=heron_shutdwon))
