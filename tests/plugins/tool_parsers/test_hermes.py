"""hermes / qwen3_json: ``<tool_call>{json}</tool_call>`` blocks; an unterminated last block counts."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.hermes import HermesToolParser

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
TIME = '{"name": "get_time", "arguments": {}}'
CASES = [
    ToolParserCase("no call", "The weather in Paris is mild today.\n", "The weather in Paris is mild today.\n", []),
    ToolParserCase("one call after text", f"Let me check.\n<tool_call>\n{WEATHER}\n</tool_call>", "Let me check.",
                   [("get_weather", {"city": "Paris", "unit": "celsius"})]),
    ToolParserCase("parallel calls", f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{TIME}\n</tool_call>", None,
                   [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {})]),
    ToolParserCase("text between and after calls",
                   f"<tool_call>{TIME}</tool_call>\nAlso:\n<tool_call>{WEATHER}</tool_call>\nDone.", "Also:\n\nDone.",
                   [("get_time", {}), ("get_weather", {"city": "Paris", "unit": "celsius"})]),
    ToolParserCase("nested, unicode and escaped arguments",
                   '<tool_call>{"name": "search", "arguments": {"q": "naïve \\"quotes\\" \\\\ and\\nnewline <tool_call>",'
                   ' "filters": {"tags": ["🌍", "日本"], "score": 2.5, "exact": true, "page": null}}}</tool_call>', None,
                   [("search", {"q": 'naïve "quotes" \\ and\nnewline <tool_call>',
                                "filters": {"tags": ["🌍", "日本"], "score": 2.5, "exact": True, "page": None}})]),
    ToolParserCase("empty and missing arguments",
                   '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b"}</tool_call>', None,
                   [("a", {}), ("b", {})]),
    ToolParserCase("parameters alias and arguments as a JSON string",
                   '<tool_call>{"name": "a", "parameters": {"x": 1}}</tool_call>'
                   '<tool_call>{"name": "b", "arguments": "{\\"y\\": 2}"}</tool_call>', None, [("a", {"x": 1}), ("b", {"y": 2})]),
    ToolParserCase("unterminated last block with complete JSON is a call",
                   f"<tool_call>{TIME}</tool_call>\n<tool_call>\n{WEATHER}\n", None,
                   [("get_time", {}), ("get_weather", {"city": "Paris", "unit": "celsius"})]),
    ToolParserCase("truncated JSON stays content", '<tool_call>\n{"name": "get_weather", "arguments": {"ci',
                   '<tool_call>\n{"name": "get_weather", "arguments": {"ci', []),
    ToolParserCase("output cut inside the opening tag", "Checking <tool_ca", "Checking <tool_ca", []),
    ToolParserCase("malformed JSON falls back to content, the next block still parses",
                   f'<tool_call>{{"name": "f", "arguments": }}</tool_call>\n<tool_call>{TIME}</tool_call>',
                   '<tool_call>{"name": "f", "arguments": }</tool_call>', [("get_time", {})]),
    ToolParserCase("arguments that are not an object stay content",
                   '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>',
                   '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>', []),
    ToolParserCase("no name stays content", '<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
    ToolParserCase("the tag mentioned in prose", "Wrap calls in <tool_call> tags.", "Wrap calls in <tool_call> tags.", []),
]


def test_conformance(tokenizer):
    check_tool_parser(HermesToolParser, tokenizer, CASES)


def test_content_before_a_call_streams_before_the_call_is_complete():
    parser = HermesToolParser(None)
    first = parser.parse_delta("Let me check.\n<tool_call>\n{\"name\": ")
    assert first is not None and first.content == "Let me check." and not first.tool_calls
    assert parser.parse_delta('"get_time", "arguments": {}}') is None
    done = parser.parse_delta("\n</tool_call>")
    assert done is not None and done.tool_calls[0].function.name == "get_time"
    assert done.tool_calls[0].id == parser.parse("Let me check.\n<tool_call>\n" + TIME + "</tool_call>").tool_calls[0].id


def test_nan_is_not_json(tokenizer):
    text = '<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>'
    check_tool_parser(HermesToolParser, tokenizer, [ToolParserCase("NaN stays content", text, text, [])])
