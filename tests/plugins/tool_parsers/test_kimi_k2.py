"""kimi_k2: ``functions.NAME:IDX`` headers, which are also the tool-call ids."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.kimi_k2 import KimiK2ToolParser

BEGIN, END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"


def call(header: str, args: str) -> str:
    return f"<|tool_call_begin|>{header}<|tool_call_argument_begin|>{args}<|tool_call_end|>"


WEATHER = call("functions.get_weather:0", '{"city": "Paris", "unit": "celsius"}')
TIME = call("functions.get_time:1", "{}")
PARIS = {"city": "Paris", "unit": "celsius"}
CASES = [
    ToolParserCase("no call", "Nothing to call.", "Nothing to call.", []),
    ToolParserCase("one call after text", f"Let me check. {BEGIN}{WEATHER}{END}", "Let me check.", [("get_weather", PARIS)]),
    ToolParserCase("parallel calls", f"{BEGIN}\n{WEATHER}\n{TIME}\n{END}", None, [("get_weather", PARIS), ("get_time", {})]),
    ToolParserCase("text after the section", f"{BEGIN}{TIME}{END}Done.", "Done.", [("get_time", {})]),
    ToolParserCase("nested, unicode and escaped arguments",
                   BEGIN + call("functions.search:0", '{"q": "naïve \\"q\\" \\\\ <|x|>", "f": {"t": ["🌍", "日本"], "n": null}}') + END,
                   None, [("search", {"q": 'naïve "q" \\ <|x|>', "f": {"t": ["🌍", "日本"], "n": None}})]),
    ToolParserCase("empty arguments and a dotted name", f"{BEGIN}{call('functions.mcp.ping:0', '')}{END}", None,
                   [("mcp.ping", {})]),
    ToolParserCase("a repeated header gets a fresh id (ids stay unique)", f"{BEGIN}{TIME}{TIME}{END}", None,
                   [("get_time", {}), ("get_time", {})]),
    ToolParserCase("singular section spelling", f"<|tool_call_section_begin|>{TIME}<|tool_call_section_end|>", None,
                   [("get_time", {})]),
    ToolParserCase("unclosed last call with complete JSON is a call", f"{BEGIN}<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{{\"a\": 1}}",
                   None, [("f", {"a": 1})]),
    ToolParserCase("truncated final call stays content, earlier calls are kept",
                   f"{BEGIN}{TIME}<|tool_call_begin|>functions.f:2<|tool_call_argument_begin|>{{\"a\": \"b",
                   "<|tool_call_begin|>functions.f:2<|tool_call_argument_begin|>{\"a\": \"b", [("get_time", {})]),
    ToolParserCase("no argument marker stays content", f"{BEGIN}<|tool_call_begin|>functions.f:0{{}}<|tool_call_end|>{END}",
                   "<|tool_call_begin|>functions.f:0{}<|tool_call_end|>", []),
    ToolParserCase("invalid JSON stays content", call("functions.f:0", "{oops}"), call("functions.f:0", "{oops}"), []),
]


def test_conformance(tokenizer):
    check_tool_parser(KimiK2ToolParser, tokenizer, CASES)


def test_header_is_the_call_id_in_parse_and_stream():
    text = f"{BEGIN}{WEATHER}{TIME}{END}"
    assert [c.id for c in KimiK2ToolParser(None).parse(text).tool_calls] == ["functions.get_weather:0", "functions.get_time:1"]
    parser = KimiK2ToolParser(None)
    ids = [tc.id for piece in (text[:50], text[50:], "") for d in [parser.parse_delta(piece)] if d for tc in d.tool_calls]
    assert ids == ["functions.get_weather:0", "functions.get_time:1"]
