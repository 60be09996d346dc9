"""granite: ``<|tool_call|>`` (3.0) or ``<tool_call>`` (3.1) then a JSON array, no closing tag."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.granite import GraniteToolParser

CASES = [
    ToolParserCase("no call", "Granite answers in plain text.", "Granite answers in plain text.", []),
    ToolParserCase("3.0 tag, one call", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Boston"}}]', None,
                   [("get_weather", {"city": "Boston"})]),
    ToolParserCase("3.1 tag, parallel calls after text",
                   'I will call two tools.\n<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]',
                   "I will call two tools.", [("a", {"x": 1}), ("b", {})]),
    ToolParserCase("text after the array", '<tool_call>[{"name": "a", "arguments": {}}]\nThat is all.', "That is all.", [("a", {})]),
    ToolParserCase("nested unicode escaped brackets in strings",
                   '<tool_call>[{"name": "s", "arguments": {"q": "]} \\" [{ ü", "n": {"l": [[1], []]}}}]', None,
                   [("s", {"q": ']} " [{ ü', "n": {"l": [[1], []]}})]),
    ToolParserCase("truncated array stays content", '<tool_call>[{"name": "a", "arguments": {"x": 1}}',
                   '<tool_call>[{"name": "a", "arguments": {"x": 1}}', []),
    ToolParserCase("malformed JSON stays content", '<tool_call>[{"name": "a", "arguments": {x: 1}}] ok',
                   '<tool_call>[{"name": "a", "arguments": {x: 1}}] ok', []),
    ToolParserCase("tag followed by prose stays content", "Use <tool_call> to call tools.", "Use <tool_call> to call tools.", []),
]


def test_conformance(tokenizer):
    check_tool_parser(GraniteToolParser, tokenizer, CASES)
