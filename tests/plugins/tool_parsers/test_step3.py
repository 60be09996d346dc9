"""step3: ``<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="f">…</steptml:invoke><｜tool_call_end｜>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.step3 import Step3ToolParser

BEGIN, END = "<｜tool_calls_begin｜>", "<｜tool_calls_end｜>"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "tags": {"type": "array"}}}}}]


def call(name: str, **params: str) -> str:
    inner = "".join(f'<steptml:parameter name="{k}">{v}</steptml:parameter>' for k, v in params.items())
    return f'<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="{name}">{inner}</steptml:invoke><｜tool_call_end｜>'


WEATHER = call("get_weather", city="Paris", days="3")
TIME = call("get_time")
PARIS = {"city": "Paris", "days": 3}
CASES = [
    ToolParserCase("no call", "Step answers.", "Step answers.", []),
    ToolParserCase("one call after text", f"Let me check.\n{BEGIN}{WEATHER}{END}", "Let me check.", [("get_weather", PARIS)]),
    ToolParserCase("parallel calls", f"{BEGIN}{WEATHER}\n{TIME}{END}", None, [("get_weather", PARIS), ("get_time", {})]),
    ToolParserCase("text after the section", f"{BEGIN}{TIME}{END}\nDone.", "Done.", [("get_time", {})]),
    ToolParserCase("nested, unicode and escaped values",
                   BEGIN + call("get_weather", city='Köln "🌍" \\ <i>日本</i>', tags='["a", {"b": null}]') + END, None,
                   [("get_weather", {"city": 'Köln "🌍" \\ <i>日本</i>', "tags": ["a", {"b": None}]})]),
    ToolParserCase("unknown parameters stay strings", BEGIN + call("f", n="1") + END, None, [("f", {"n": "1"})]),
    ToolParserCase("unclosed call with a complete invoke is a call", BEGIN + WEATHER.removesuffix("<｜tool_call_end｜>"), None,
                   [("get_weather", PARIS)]),
    ToolParserCase("truncated final call stays content, earlier calls are kept",
                   f'{BEGIN}{TIME}<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="f"><steptml:param',
                   '<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="f"><steptml:param', [("get_time", {})]),
    ToolParserCase("missing separator stays content",
                   '<｜tool_call_begin｜>function<steptml:invoke name="f"></steptml:invoke><｜tool_call_end｜>',
                   '<｜tool_call_begin｜>function<steptml:invoke name="f"></steptml:invoke><｜tool_call_end｜>', []),
]


def test_conformance(tokenizer):
    check_tool_parser(Step3ToolParser, tokenizer, CASES, tools=TOOLS)
