"""The named registries: metadata-only listing, lazy cached loading, errors that help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from heron.interfaces import ToolParser
from heron.plugins import GROUPS, PluginLoadError, UnknownPluginError, registry
from heron.protocol import DeltaMessage, ToolParseResult

GOOD = """
    from heron.interfaces import ToolParser
    from heron.protocol import ToolParseResult

    IMPORTS = [0]
    IMPORTS[0] += 1

    class Good(ToolParser):
        def parse(self, text):
            return ToolParseResult(content=text)
        def parse_delta(self, delta_text, delta_token_ids=()):
            return None
        def finish(self):
            return None
"""


class _InProcess(ToolParser):
    def parse(self, text: str) -> ToolParseResult:
        return ToolParseResult(content=text)

    def parse_delta(self, delta_text, delta_token_ids=()) -> DeltaMessage | None:
        return DeltaMessage(content=delta_text)

    def finish(self) -> DeltaMessage | None:
        return None


def test_every_kind_has_a_registry_with_its_group():
    assert set(GROUPS) == {
        "tool_parsers", "reasoning_parsers", "models", "attention_backends", "linear_kernels", "middlewares", "hooks",
        "response_stores", "lora_resolvers",
    }
    for kind, group in GROUPS.items():
        assert registry(kind).group == group
        assert registry(kind) is registry(kind)


def test_names_reads_metadata_without_importing_plugins():
    code = (
        "import sys; from heron.plugins import registry\n"
        "names = registry('models').names() + registry('attention_backends').names()\n"
        "assert 'LlamaForCausalLM' in names and 'torch_sdpa' in names, names\n"
        "loaded = [m for m in sys.modules if m.startswith('heron_plugins')]\n"
        "assert not loaded, loaded\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_is_lazy_cached_and_idempotent(fake_dist):
    fake_dist("heron-fake-good", {"heron.tool_parsers": {"fake_good": "heron_fake_good:Good"}},
              {"heron_fake_good": GOOD})
    reg = registry("tool_parsers")
    assert "fake_good" in reg.names()
    assert "heron_fake_good" not in sys.modules  # listing imported nothing
    first = reg.load("fake_good")
    assert issubclass(first, ToolParser)
    assert reg.load("fake_good") is first
    assert sys.modules["heron_fake_good"].IMPORTS == [1]
    info = reg.entry_points()["fake_good"]
    assert (info.distribution, info.version, info.target) == ("heron-fake-good", "0.0.1", "heron_fake_good:Good")


def test_unknown_name_lists_known_names_and_closest_match():
    reg = registry("tool_parsers")
    undo = reg.register("bracket_calls", _InProcess)
    try:
        with pytest.raises(UnknownPluginError) as info:
            reg.load("bracket_cals")
        message = str(info.value)
        assert "Did you mean 'bracket_calls'?" in message
        assert "bracket_calls" in message.split("Installed:")[1]
        assert info.value.suggestion == "bracket_calls"
    finally:
        undo()
    with pytest.raises(UnknownPluginError):
        reg.load("bracket_calls")


def test_broken_plugin_reports_its_real_traceback(fake_dist):
    fake_dist(
        "heron-fake-broken",
        {"heron.tool_parsers": {"fake_broken": "heron_fake_broken:Parser"}},
        {"heron_fake_broken": "import json\nraise RuntimeError('needs libfoo 2.0 (boom)')\n"},
    )
    reg = registry("tool_parsers")
    with pytest.raises(PluginLoadError) as info:
        reg.load("fake_broken")
    err = info.value
    assert not isinstance(err, UnknownPluginError)
    assert "needs libfoo 2.0 (boom)" in err.traceback
    assert "heron_fake_broken.py" in err.traceback and "Traceback" in err.traceback
    assert reg.errors()["fake_broken"] is err
    with pytest.raises(PluginLoadError) as again:  # same answer, no second import attempt
        reg.load("fake_broken")
    assert again.value is err


def test_plugin_failing_its_interface_check_is_refused(fake_dist):
    fake_dist(
        "heron-fake-wrong",
        {"heron.tool_parsers": {"fake_wrong": "heron_fake_wrong:NotAParser"}},
        {"heron_fake_wrong": "class NotAParser:\n    pass\n"},
    )
    with pytest.raises(PluginLoadError, match="not a subclass of heron.interfaces.tool_parser.ToolParser"):
        registry("tool_parsers").load("fake_wrong")


def test_register_checks_the_interface_and_can_be_undone():
    reg = registry("tool_parsers")
    with pytest.raises(TypeError, match="not a subclass"):
        reg.register("bad", object)

    class Abstract(ToolParser):
        pass

    with pytest.raises(TypeError, match="abstract methods unimplemented: finish, parse, parse_delta"):
        reg.register("abstract", Abstract)
    undo = reg.register("inproc", _InProcess)
    assert "inproc" in reg.names() and reg.load("inproc") is _InProcess
    undo()
    assert "inproc" not in reg.names()


def test_unknown_registry_kind():
    with pytest.raises(UnknownPluginError, match="Did you mean 'tool_parsers'"):
        registry("tool_parser")
