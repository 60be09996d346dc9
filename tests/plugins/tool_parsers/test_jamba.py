"""jamba: ``<tool_calls>[{json}, …]</tool_calls>``; an unterminated block stays content."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.jamba import JambaToolParser

CASES = [
    ToolParserCase("no call", "Just text with a <tool> tag.", "Just text with a <tool> tag.", []),
    ToolParserCase("one call after text", 'Checking.\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Rome"}}]</tool_calls>',
                   "Checking.", [("get_weather", {"city": "Rome"})]),
    ToolParserCase("parallel calls", '<tool_calls>\n[{"name": "a", "arguments": {"u": "\\u00fc → ü"}},\n'
                   ' {"name": "b", "arguments": {"deep": {"x": [[{}]]}}}]\n</tool_calls>', None,
                   [("a", {"u": "ü → ü"}), ("b", {"deep": {"x": [[{}]]}})]),
    ToolParserCase("empty arguments, text after", '<tool_calls>[{"name": "now", "arguments": {}}]</tool_calls>\nok', "ok",
                   [("now", {})]),
    ToolParserCase("unterminated block stays content", '<tool_calls>[{"name": "a", "arguments": {}}]',
                   '<tool_calls>[{"name": "a", "arguments": {}}]', []),
    ToolParserCase("an object instead of an array stays content", '<tool_calls>{"name": "a", "arguments": {}}</tool_calls>',
                   '<tool_calls>{"name": "a", "arguments": {}}</tool_calls>', []),
    ToolParserCase("malformed stays content", '<tool_calls>[{"name": "a", "arguments": {"x": }}]</tool_calls>',
                   '<tool_calls>[{"name": "a", "arguments": {"x": }}]</tool_calls>', []),
]


def test_conformance(tokenizer):
    check_tool_parser(JambaToolParser, tokenizer, CASES)
