"""deepseek_v31: ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>``, no fence."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.deepseek_v31 import DeepSeekV31ToolParser

BEGIN, END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"


def call(name: str, args: str) -> str:
    return f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{args}<｜tool▁call▁end｜>"


WEATHER = call("get_weather", '{"city": "Paris", "unit": "celsius"}')
TIME = call("get_time", "{}")
PARIS = {"city": "Paris", "unit": "celsius"}
CASES = [
    ToolParserCase("no call", "Plain answer.\n", "Plain answer.\n", []),
    ToolParserCase("one call after text", f"Let me check.{BEGIN}{WEATHER}{END}", "Let me check.", [("get_weather", PARIS)]),
    ToolParserCase("parallel calls", f"{BEGIN}{WEATHER}{TIME}{END}", None, [("get_weather", PARIS), ("get_time", {})]),
    ToolParserCase("text after the section", f"{BEGIN}{TIME}{END} Done.", "Done.", [("get_time", {})]),
    ToolParserCase("nested, unicode and escaped arguments",
                   BEGIN + call("search", '{"q": "naïve \\"q\\" \\\\ <b>", "f": {"tags": ["🌍", "日本"], "n": -1e3}}') + END,
                   None, [("search", {"q": 'naïve "q" \\ <b>', "f": {"tags": ["🌍", "日本"], "n": -1000.0}})]),
    ToolParserCase("empty arguments text is {}", f"{BEGIN}{call('ping', '')}{END}", None, [("ping", {})]),
    ToolParserCase("unclosed last call with complete JSON is a call", f"{BEGIN}<｜tool▁call▁begin｜>f<｜tool▁sep｜>{{\"a\": 1}}",
                   None, [("f", {"a": 1})]),
    ToolParserCase("missing call end: the next call ends it",
                   f"{BEGIN}<｜tool▁call▁begin｜>f<｜tool▁sep｜>{{\"a\": 1}}{TIME}{END}", None, [("f", {"a": 1}), ("get_time", {})]),
    ToolParserCase("truncated final call stays content, earlier calls are kept",
                   f"{BEGIN}{TIME}<｜tool▁call▁begin｜>f<｜tool▁sep｜>{{\"a\": [1, ",
                   "<｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\": [1, ", [("get_time", {})]),
    ToolParserCase("an overflowing number would not re-serialise as JSON: stays content",
                   call("f", '{"a": 1e999}'), call("f", '{"a": 1e999}'), []),
    ToolParserCase("no separator stays content", f"{BEGIN}<｜tool▁call▁begin｜>f{{}}<｜tool▁call▁end｜>{END}",
                   "<｜tool▁call▁begin｜>f{}<｜tool▁call▁end｜>", []),
    ToolParserCase("invalid JSON stays content", "<｜tool▁call▁begin｜>f<｜tool▁sep｜>{'a': 1}<｜tool▁call▁end｜>",
                   "<｜tool▁call▁begin｜>f<｜tool▁sep｜>{'a': 1}<｜tool▁call▁end｜>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(DeepSeekV31ToolParser, tokenizer, CASES)
