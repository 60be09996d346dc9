"""olmo3: ``<function_calls>`` one Python-style call per line ``</function_calls>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.olmo3 import Olmo3ToolParser

CASES = [
    ToolParserCase("no call", "No tools needed.", "No tools needed.", []),
    ToolParserCase("one call after text", 'I will look.\n<function_calls>\nget_weather(city="Oslo")\n</function_calls>',
                   "I will look.", [("get_weather", {"city": "Oslo"})]),
    ToolParserCase("parallel calls", '<function_calls>\na(x=1)\nb(s="日本", l=[1, {"k": None}])\n</function_calls>', None,
                   [("a", {"x": 1}), ("b", {"s": "日本", "l": [1, {"k": None}]})]),
    ToolParserCase("no arguments", "<function_calls>now()</function_calls>", None, [("now", {})]),
    ToolParserCase("unterminated block stays content", "<function_calls>\na(x=1)\n", "<function_calls>\na(x=1)\n", []),
    ToolParserCase("malformed line stays content", "<function_calls>\na(x=1)\nnot a call\n</function_calls>",
                   "<function_calls>\na(x=1)\nnot a call\n</function_calls>", []),
    ToolParserCase("empty block stays content", "<function_calls>\n</function_calls>", "<function_calls>\n</function_calls>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Olmo3ToolParser, tokenizer, CASES)
