"""minimax_m2: ``<minimax:tool_call>`` blocks of ``<invoke name="f"><parameter name="k">v</parameter></invoke>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.minimax_m2 import MiniMaxM2ToolParser

START, END = "<minimax:tool_call>", "</minimax:tool_call>"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "opts": {"type": "object"}, "hourly": {"type": "boolean"}}}}}]
WEATHER = '<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n<parameter name="days">3</parameter>\n</invoke>'
TIME = '<invoke name="get_time">\n</invoke>'
PARIS = {"city": "Paris", "days": 3}
CASES = [
    ToolParserCase("no call", "MiniMax answers.", "MiniMax answers.", []),
    ToolParserCase("one call after text", f"Let me check.\n{START}\n{WEATHER}\n{END}", "Let me check.",
                   [("get_weather", PARIS)]),
    ToolParserCase("parallel calls in one block", f"{START}\n{WEATHER}\n{TIME}\n{END}", None,
                   [("get_weather", PARIS), ("get_time", {})]),
    ToolParserCase("text between and after blocks", f"{START}{TIME}{END}\nThen\n{START}{WEATHER}{END}\nDone.",
                   "Then\n\nDone.", [("get_time", {}), ("get_weather", PARIS)]),
    ToolParserCase("nested, unicode and escaped values",
                   f"{START}<invoke name='get_weather'><parameter name=\"city\">São \"Paulo\" \\ 🌍 <b>日本</b></parameter>"
                   f"<parameter name=\"opts\">{{\"u\": [\"c\", null], \"x\": {{\"y\": 1.5}}}}</parameter>"
                   f"<parameter name=\"hourly\">true</parameter></invoke>{END}", None,
                   [("get_weather", {"city": 'São "Paulo" \\ 🌍 <b>日本</b>', "opts": {"u": ["c", None], "x": {"y": 1.5}},
                                     "hourly": True})]),
    ToolParserCase("unclosed block with complete invokes is read", f"{START}\n{TIME}\n", None, [("get_time", {})]),
    ToolParserCase("truncated final call: the whole block stays content",
                   f'{START}\n{TIME}\n<invoke name="get_weather">\n<parameter name="city">Par',
                   f'{START}\n{TIME}\n<invoke name="get_weather">\n<parameter name="city">Par', []),
    ToolParserCase("malformed block stays content", f"{START}<invoke>oops</invoke>{END}", f"{START}<invoke>oops</invoke>{END}", []),
    ToolParserCase("an empty block stays content", f"{START}{END}", f"{START}{END}", []),
]


def test_conformance(tokenizer):
    check_tool_parser(MiniMaxM2ToolParser, tokenizer, CASES, tools=TOOLS)
