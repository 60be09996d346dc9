"""Every tool-call format of FORMATS.md has a declared entry point that loads a ToolParser.
"""

from __future__ import annotations

import pytest

from heron.interfaces import ToolParser
from heron.plugins import registry
from tests.plugins.tool_parsers.declared import FORMATS, declared, load_target


def test_every_format_is_declared():
    assert set(FORMATS) <= set(declared())


@pytest.mark.parametrize("name", FORMATS)
def test_target_is_a_tool_parser_the_registry_accepts(name):
    cls = load_target(declared()[name])
    assert issubclass(cls, ToolParser)
    parsers = registry("tool_parsers")
    assert name in parsers.names()
    assert parsers.load(name) is cls


@pytest.mark.parametrize("name", FORMATS)
def test_shared_behaviour(name):
    cls = load_target(declared()[name])
    parser = cls(None, [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert parser.parse_delta("") is None
    assert parser.finish() is None
    plain = cls(None).parse("Just an answer.")
    assert plain.content == "Just an answer." and plain.tool_calls == []
    assert cls(None).parse("").content is None
