"""granite-20b-fc: ``<function_call> {json}`` repeated, no closing tag."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.granite_20b_fc import Granite20bFcToolParser

CASES = [
    ToolParserCase("no call", "No function needed.", "No function needed.", []),
    ToolParserCase("one call", '<function_call> {"name": "get_weather", "arguments": {"location": "Tokyo"}}', None,
                   [("get_weather", {"location": "Tokyo"})]),
    ToolParserCase("parallel calls after text", 'Sure.\n<function_call> {"name": "a", "arguments": {}}\n'
                   '<function_call> {"name": "b", "arguments": {"s": "東京 \\"x\\""}}', "Sure.", [("a", {}), ("b", {"s": '東京 "x"'})]),
    ToolParserCase("nested with braces in strings", '<function_call> {"name": "c", "arguments": {"code": "if (x) { y(); }", "l": [{}]}}',
                   None, [("c", {"code": "if (x) { y(); }", "l": [{}]})]),
    ToolParserCase("truncated call stays content", '<function_call> {"name": "a", "argu', '<function_call> {"name": "a", "argu', []),
    ToolParserCase("marker then prose stays content", "<function_call> not json", "<function_call> not json", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Granite20bFcToolParser, tokenizer, CASES)
