"""deepseek_v3: ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`` + a fenced JSON block per call."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.deepseek_v3 import DeepSeekV3ToolParser

BEGIN, END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"


def call(name: str, args: str) -> str:
    return f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>"


WEATHER = call("get_weather", '{"city": "Paris", "unit": "celsius"}')
TIME = call("get_time", "{}")
PARIS = {"city": "Paris", "unit": "celsius"}
CASES = [
    ToolParserCase("no call", "The weather in Paris is mild.", "The weather in Paris is mild.", []),
    ToolParserCase("one call after text", f"Let me check.\n\n{BEGIN}{WEATHER}{END}", "Let me check.",
                   [("get_weather", PARIS)]),
    ToolParserCase("parallel calls", f"{BEGIN}{WEATHER}\n{TIME}{END}", None, [("get_weather", PARIS), ("get_time", {})]),
    ToolParserCase("text after the section", f"{BEGIN}{TIME}{END}\nDone.", "Done.", [("get_time", {})]),
    ToolParserCase("nested, unicode and escaped arguments",
                   BEGIN + call("search", '{"q": "naïve \\"q\\" ```x``` \\n <b>x</b>", '
                                '"f": {"tags": ["🌍", "日本"], "n": 2.5, "ok": true, "p": null}}') + END, None,
                   [("search", {"q": 'naïve "q" ```x``` \n <b>x</b>',
                                "f": {"tags": ["🌍", "日本"], "n": 2.5, "ok": True, "p": None}})]),
    ToolParserCase("fence without a language tag", f"{BEGIN}<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```\n{{\"a\": 1}}\n```"
                   f"<｜tool▁call▁end｜>{END}", None, [("f", {"a": 1})]),
    ToolParserCase("unclosed call and section with a complete fence is a call",
                   f"{BEGIN}{TIME}\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{{\"a\": 1}}\n```", None,
                   [("get_time", {}), ("f", {"a": 1})]),
    ToolParserCase("truncated final call stays content, earlier calls are kept",
                   f"{BEGIN}{TIME}<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{{\"a\": ",
                   "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": ", [("get_time", {})]),
    ToolParserCase("invalid JSON stays content",
                   f"{BEGIN}<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{{a: 1}}\n```<｜tool▁call▁end｜>{END}",
                   "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{a: 1}\n```<｜tool▁call▁end｜>", []),
    ToolParserCase("NaN is not JSON: stays content",
                   "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": NaN}\n```<｜tool▁call▁end｜>",
                   "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\": NaN}\n```<｜tool▁call▁end｜>", []),
    ToolParserCase("arguments not an object stay content",
                   "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n[1]\n```<｜tool▁call▁end｜>",
                   "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n[1]\n```<｜tool▁call▁end｜>", []),
    ToolParserCase("output cut inside a marker", "Checking <｜tool▁ca", "Checking <｜tool▁ca", []),
]


def test_conformance(tokenizer):
    check_tool_parser(DeepSeekV3ToolParser, tokenizer, CASES)


def test_each_call_streams_when_it_closes():
    parser = DeepSeekV3ToolParser(None)
    first = parser.parse_delta(f"Sure.{BEGIN}{TIME}")
    assert first is not None and first.content == "Sure." and first.tool_calls[0].function.name == "get_time"
    assert parser.parse_delta(WEATHER[:40]) is None
