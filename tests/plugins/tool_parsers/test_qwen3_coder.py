"""qwen3_coder / qwen3_xml: ``<tool_call><function=NAME><parameter=k>v</parameter></function></tool_call>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.qwen3_coder import Qwen3CoderToolParser


def call(name: str, **params: str) -> str:
    inner = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{inner}</function>\n</tool_call>"


TOOLS = [
    {"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
        "guests": {"type": "integer"}, "price": {"type": "number"}, "vip": {"type": "boolean"},
        "dates": {"type": "array"}, "meta": {"type": "object"}, "room": {"type": "string"}, "gone": {"type": "null"},
        "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}}}},
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}}}},
]
WEATHER = call("get_weather", city="Paris", days="3")
TIME = call("get_time")
CASES = [
    ToolParserCase("no call", "def f():\n    return 1\n", "def f():\n    return 1\n", []),
    ToolParserCase("one call after text", f"Let me check.\n\n{WEATHER}", "Let me check.",
                   [("get_weather", {"city": "Paris", "days": 3})]),
    ToolParserCase("parallel calls", f"{WEATHER}\n{TIME}", None, [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]),
    ToolParserCase("text between and after calls", f"{TIME}\nAlso:\n{WEATHER}\nDone.", "Also:\n\nDone.",
                   [("get_time", {}), ("get_weather", {"city": "Paris", "days": 3})]),
    ToolParserCase("values converted by the schema",
                   call("book", guests="2", price="1e2", vip="false", dates='["a", "b"]', meta="{'k': [1, True]}",
                        room="101", gone="null", either="true", extra="7"), None,
                   [("book", {"guests": 2, "price": 100.0, "vip": False, "dates": ["a", "b"], "meta": {"k": [1, True]},
                              "room": "101", "gone": None, "either": True, "extra": "7"})]),
    ToolParserCase("values that do not fit their type stay strings", call("book", guests="2.5", vip="yes", dates="{"), None,
                   [("book", {"guests": "2.5", "vip": "yes", "dates": "{"})]),
    ToolParserCase("code with unicode, quotes, tags and inner newlines is kept exactly",
                   call("write", path="a.py", code='\n\nprint("naïve \\"🌍\\"")\n<div>日本</div>\n\n'), None,
                   [("write", {"path": "a.py", "code": '\n\nprint("naïve \\"🌍\\"")\n<div>日本</div>\n\n'})]),
    ToolParserCase("missing </parameter> is tolerated",
                   "<tool_call><function=get_weather><parameter=city>Paris\n<parameter=days>2\n</function></tool_call>", None,
                   [("get_weather", {"city": "Paris", "days": 2})]),
    ToolParserCase("unclosed block with a complete function is a call",
                   "<tool_call>\n<function=get_time>\n</function>\n", None, [("get_time", {})]),
    ToolParserCase("truncated final call stays content",
                   f"{TIME}\n<tool_call>\n<function=get_weather>\n<parameter=city>\nPar",
                   "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar", [("get_time", {})]),
    ToolParserCase("a block without a function stays content", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
                   "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", []),
    ToolParserCase("stray text in a function stays content",
                   "<tool_call><function=f>oops<parameter=a>1</parameter></function></tool_call>",
                   "<tool_call><function=f>oops<parameter=a>1</parameter></function></tool_call>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Qwen3CoderToolParser, tokenizer, CASES, tools=TOOLS)


def test_without_tools_values_stay_strings():
    result = Qwen3CoderToolParser(None).parse(WEATHER)
    assert result.tool_calls[0].function.arguments == '{"city": "Paris", "days": "3"}'
