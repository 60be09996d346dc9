"""Every reasoning format of FORMATS.md has a declared entry point that loads a ReasoningParser.
"""

from __future__ import annotations

import pytest

from heron.interfaces import ReasoningParser
from heron.plugins import registry
from tests.plugins.reasoning.declared import FORMATS, declared, load_target


def test_every_format_is_declared_once():
    assert set(FORMATS) <= set(declared())


@pytest.mark.parametrize("name", FORMATS)
def test_target_is_a_reasoning_parser_the_registry_accepts(name):
    cls = load_target(declared()[name])
    assert issubclass(cls, ReasoningParser)
    reasoning = registry("reasoning_parsers")
    assert name in reasoning.names()
    assert reasoning.load(name) is cls


@pytest.mark.parametrize("name", FORMATS)
def test_shared_behaviour(name):
    cls = load_target(declared()[name])
    parser = cls(None)
    assert parser.parse_delta("") is None
    assert cls(None, thinking=False).parse("plain words") == (None, "plain words")
    assert cls(None).parse("") in ((None, None), (None, "<think>"))
