"""Random soups of each format's markers, JSON and prose: streaming always equals ``parse``.

The expectation of each soup is what ``parse`` itself says, so this checks consistency (any
chunking, ids, valid JSON, no crash), not the reading; the per-format tests check the reading.
"""

from __future__ import annotations

import importlib
import json
import random

import pytest

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers._base import BufferedToolParser
from tests.plugins.tool_parsers.declared import declared, fixture_module, load_target

COMMON = [" ", "\n", "Hi", "ok.", "é", "{", "}", "[", "]", '"', "\\", ",", ":", ";", "<", ">", "|", "```", "```json",
          '{"name": "f", "arguments": {"a": [1, "x]}"]}}', '{"name": "g"}', '[{"name": "h", "parameters": {}}]',
          '{"x": 1}', "f(a=1)", "[f(a=1), g()]", "g()", "[ARGS]", "[CALL_ID]", "abcdefghi", "functools", "function call",
          "<|role_sep|>", '[{"k": {"v": 2}}]', "</think>", "<tool_call>", "</tool_call>"]


def _soup(parser_cls: type, target: str, rng: random.Random) -> str:
    """Fixture texts of the format (with their calls), markers, halves of markers and noise, maybe cut."""
    markers: list[str] = []
    if issubclass(parser_cls, BufferedToolParser):
        markers = [*parser_cls.start_markers, *parser_cls.anchored_markers, *parser_cls.end_markers]
        markers += [m[: len(m) // 2] for m in markers if len(m) > 1]
    try:
        fixtures = [case.text for case in importlib.import_module(fixture_module(target)).CASES]
    except (ImportError, AttributeError):  # a parser without a fixture module of that shape
        fixtures = []
    pool = COMMON + markers * 3 + fixtures * 4
    text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 6)))
    return text[: rng.randint(0, len(text))] if rng.random() < 0.3 else text


@pytest.mark.parametrize("name", sorted(declared()))
def test_streaming_equals_parse_on_marker_soup(name, tokenizer):
    target = declared()[name]
    parser_cls = load_target(target)
    rng = random.Random(f"soup/{name}")
    cases = []
    for n in range(60):
        text = _soup(parser_cls, target, rng)
        parsed = parser_cls(tokenizer).parse(text)
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in parsed.tool_calls]
        cases.append(ToolParserCase(f"soup #{n} {text!r}", text, parsed.content, calls))
    check_tool_parser(parser_cls, tokenizer, cases, random_splits=3)
