"""granite4: ``<tool_call>{json}</tool_call>`` blocks; an unterminated block stays content."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.granite4 import Granite4ToolParser

CASES = [
    ToolParserCase("no call", "Nothing to call.", "Nothing to call.", []),
    ToolParserCase("one call", '<tool_call>\n{"name": "get_stock", "arguments": {"ticker": "IBM"}}\n</tool_call>', None,
                   [("get_stock", {"ticker": "IBM"})]),
    ToolParserCase("parallel with text between", '<tool_call>{"name": "a", "arguments": {}}</tool_call> then '
                   '<tool_call>{"name": "b", "arguments": {"k": "ä\\u00df"}}</tool_call>', "then", [("a", {}), ("b", {"k": "äß"})]),
    ToolParserCase("nested", '<tool_call>{"name": "n", "arguments": {"a": {"b": {"c": [true, null]}}}}</tool_call>', None,
                   [("n", {"a": {"b": {"c": [True, None]}}})]),
    ToolParserCase("unterminated block stays content", '<tool_call>{"name": "a", "arguments": {}}',
                   '<tool_call>{"name": "a", "arguments": {}}', []),
    ToolParserCase("malformed stays content", "<tool_call>{name: a}</tool_call>", "<tool_call>{name: a}</tool_call>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Granite4ToolParser, tokenizer, CASES)
