"""gigachat3: ``function call<|role_sep|>\\n{json}``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.gigachat3 import Gigachat3ToolParser

CASES = [
    ToolParserCase("no call", "Привет! Чем помочь?", "Привет! Чем помочь?", []),
    ToolParserCase("one call", 'function call<|role_sep|>\n{"name": "get_weather", "arguments": {"city": "Москва"}}', None,
                   [("get_weather", {"city": "Москва"})]),
    ToolParserCase("text before, nested arguments", 'Сейчас проверю.function call<|role_sep|>\n'
                   '{"name": "search", "arguments": {"q": "\\"кот\\"", "filters": {"tags": [], "n": 3}}}', "Сейчас проверю.",
                   [("search", {"q": '"кот"', "filters": {"tags": [], "n": 3}})]),
    ToolParserCase("empty arguments", 'function call<|role_sep|>\n{"name": "now", "arguments": {}}', None, [("now", {})]),
    ToolParserCase("truncated stays content", 'function call<|role_sep|>\n{"name": "now", "arg',
                   'function call<|role_sep|>\n{"name": "now", "arg', []),
    ToolParserCase("prose with the words function call", "A function call is cheap.", "A function call is cheap.", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Gigachat3ToolParser, tokenizer, CASES)
