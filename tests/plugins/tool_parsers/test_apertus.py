"""apertus: ``<|tools_prefix|>[{"NAME": {args}}, …]<|tools_suffix|>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.apertus import ApertusToolParser

CASES = [
    ToolParserCase("no call", "Grüezi! How can I help?", "Grüezi! How can I help?", []),
    ToolParserCase("one call", '<|tools_prefix|>[{"get_weather": {"city": "Zürich"}}]<|tools_suffix|>', None,
                   [("get_weather", {"city": "Zürich"})]),
    ToolParserCase("parallel after text", 'Checking both.<|tools_prefix|>[{"a": {}}, {"b": {"n": {"m": ["\\\\", "\\""]}}}]'
                   "<|tools_suffix|>", "Checking both.", [("a", {}), ("b", {"n": {"m": ["\\", '"']}})]),
    ToolParserCase("unterminated stays content", '<|tools_prefix|>[{"a": {}}]', '<|tools_prefix|>[{"a": {}}]', []),
    ToolParserCase("two keys in one element stay content", '<|tools_prefix|>[{"a": {}, "b": {}}]<|tools_suffix|>',
                   '<|tools_prefix|>[{"a": {}, "b": {}}]<|tools_suffix|>', []),
    ToolParserCase("arguments not an object stay content", '<|tools_prefix|>[{"a": 1}]<|tools_suffix|>',
                   '<|tools_prefix|>[{"a": 1}]<|tools_suffix|>', []),
]


def test_conformance(tokenizer):
    check_tool_parser(ApertusToolParser, tokenizer, CASES)
