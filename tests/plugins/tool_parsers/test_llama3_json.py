"""llama3_json / llama4_json: the output is ``;``-separated JSON call objects, optionally after ``<|python_tag|>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.llama3_json import Llama3JsonToolParser

WEATHER = '{"name": "get_weather", "parameters": {"city": "San Francisco"}}'
CASES = [
    ToolParserCase("no call", "San Francisco is foggy {usually}.", "San Francisco is foggy {usually}.", []),
    ToolParserCase("one call, parameters", WEATHER, None, [("get_weather", {"city": "San Francisco"})]),
    ToolParserCase("python tag and arguments key", '<|python_tag|>{"name": "f", "arguments": {"x": 1}}', None, [("f", {"x": 1})]),
    ToolParserCase("parallel calls separated by ;", f' {WEATHER}; {{"name": "get_time", "parameters": {{}}}}', None,
                   [("get_weather", {"city": "San Francisco"}), ("get_time", {})]),
    ToolParserCase("text before the python tag", 'Let me look.\n<|python_tag|>{"name": "f", "parameters": {}}', "Let me look.",
                   [("f", {})]),
    ToolParserCase("nested unicode escaped", '{"name": "q", "parameters": {"s": "é\\"\\\\\\u00e9", "n": {"a": [1, {"b": null}]}}}',
                   None, [("q", {"s": 'é"\\é', "n": {"a": [1, {"b": None}]}})]),
    ToolParserCase("no parameters", '{"name": "ping"}', None, [("ping", {})]),
    ToolParserCase("end-of-message token kept in the text", '<|python_tag|>{"name": "ping"}<|eom_id|>', None, [("ping", {})]),
    ToolParserCase("truncated JSON stays content", '{"name": "f", "parameters": {"x": ', '{"name": "f", "parameters": {"x": ', []),
    ToolParserCase("a JSON answer that is not a call stays content", '{"answer": 42}', '{"answer": 42}', []),
    ToolParserCase("trailing prose makes it content", f"{WEATHER} is what I would call", f"{WEATHER} is what I would call", []),
    ToolParserCase("a brace later in the text is not a call", 'Use {"name": "f"} like this', 'Use {"name": "f"} like this', []),
]


def test_conformance(tokenizer):
    check_tool_parser(Llama3JsonToolParser, tokenizer, CASES)


def test_prose_streams_at_once():
    delta = Llama3JsonToolParser(None).parse_delta("Hello there\n")
    assert delta is not None and delta.content == "Hello there"  # the newline waits for what follows
