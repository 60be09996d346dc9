"""pythonic: the output is a Python list of calls, read with ``ast`` (literals only)."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.pythonic import PythonicToolParser

CASES = [
    ToolParserCase("no call", "Paris is the capital of France.", "Paris is the capital of France.", []),
    ToolParserCase("one call", '[get_weather(city="Paris", days=3)]', None, [("get_weather", {"city": "Paris", "days": 3})]),
    ToolParserCase("parallel calls and leading whitespace", '\n[get_weather(city="Paris"), get_time(tz="CET")]', None,
                   [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]),
    ToolParserCase("nested, unicode, escapes and JSON-style literals",
                   "[search(q='naïve \"x\" \\\\ 日本\\n', opts={'k': [1, -2.5, (3, 4)], 'ok': true, 'none': None}, flag=False)]",
                   None, [("search", {"q": 'naïve "x" \\ 日本\n', "opts": {"k": [1, -2.5, [3, 4]], "ok": True, "none": None},
                                      "flag": False})]),
    ToolParserCase("no arguments and a dotted name", "[ping(), tools.clock.now()]", None, [("ping", {}), ("tools.clock.now", {})]),
    ToolParserCase("truncated list stays content", '[get_weather(city="Par', '[get_weather(city="Par', []),
    ToolParserCase("a variable is not a literal", "[f(x=y)]", "[f(x=y)]", []),
    ToolParserCase("a nested call is not a literal", '[f(x=__import__("os").system("ls"))]',
                   '[f(x=__import__("os").system("ls"))]', []),
    ToolParserCase("positional arguments are refused", "[f(1, 2)]", "[f(1, 2)]", []),
    ToolParserCase("a markdown link is content", "[docs](https://example.com) say so", "[docs](https://example.com) say so", []),
    ToolParserCase("an empty list is content", "[]", "[]", []),
    ToolParserCase("a list after prose is content", 'Sure: [f(x=1)]', 'Sure: [f(x=1)]', []),
]


def test_conformance(tokenizer):
    check_tool_parser(PythonicToolParser, tokenizer, CASES)
