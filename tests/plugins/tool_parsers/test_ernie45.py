"""ernie45: ``<tool_call>{json}</tool_call>`` after the reasoning (already removed by the reasoning parser)."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.ernie45 import Ernie45ToolParser

CASES = [
    ToolParserCase("no call", "\n\nERNIE answers directly.", "\n\nERNIE answers directly.", []),
    ToolParserCase("one call", '\n\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "北京"}}\n</tool_call>\n', None,
                   [("get_weather", {"location": "北京"})]),
    ToolParserCase("parallel calls with text", 'Two lookups:\n<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
                   '<tool_call>{"name": "b", "arguments": {"q": "\\"x\\"", "n": [{"k": false}]}}</tool_call>', "Two lookups:",
                   [("a", {}), ("b", {"q": '"x"', "n": [{"k": False}]})]),
    ToolParserCase("unterminated stays content", '<tool_call>{"name": "a", "arguments": {}}', '<tool_call>{"name": "a", "arguments": {}}', []),
    ToolParserCase("malformed stays content", '<tool_call>{"name": 3}</tool_call>', '<tool_call>{"name": 3}</tool_call>', []),
]


def test_conformance(tokenizer):
    check_tool_parser(Ernie45ToolParser, tokenizer, CASES)
