"""glm45 / glm47: ``<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.glm45 import Glm45ToolParser

TOOLS = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
    "guests": {"type": "integer"}, "price": {"type": "number"}, "vip": {"type": "boolean"},
    "dates": {"type": "array", "items": {"type": "string"}}, "meta": {"type": "object"},
    "room": {"type": "string"}, "note": {"type": ["string", "null"]}}}}}]
WEATHER = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
TIME = "<tool_call>get_time\n</tool_call>"
CASES = [
    ToolParserCase("no call", "GLM says hi.", "GLM says hi.", []),
    ToolParserCase("one call after text", f"Let me check.\n{WEATHER}", "Let me check.", [("get_weather", {"city": "Paris"})]),
    ToolParserCase("parallel calls (GLM-4.7: no newline after the name)",
                   "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
                   "<tool_call>get_time</tool_call>", None, [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    ToolParserCase("text between and after calls", f"{TIME}\nAlso:\n{WEATHER}\nDone.", "Also:\n\nDone.",
                   [("get_time", {}), ("get_weather", {"city": "Paris"})]),
    ToolParserCase("values are strings without a schema",
                   "<tool_call>f<arg_key>n</arg_key><arg_value>42</arg_value><arg_key>b</arg_key><arg_value>true</arg_value>"
                   "<arg_key>o</arg_key><arg_value>{\"a\": 1}</arg_value></tool_call>", None,
                   [("f", {"n": "42", "b": "true", "o": '{"a": 1}'})]),
    ToolParserCase("values converted by the tool schema",
                   "<tool_call>book\n<arg_key>guests</arg_key>\n<arg_value>2</arg_value>\n<arg_key>price</arg_key>"
                   "<arg_value>99.5</arg_value><arg_key>vip</arg_key><arg_value>True</arg_value>"
                   "<arg_key>dates</arg_key><arg_value>[\"2025-01-01\", \"2025-01-02\"]</arg_value>"
                   "<arg_key>meta</arg_key><arg_value>{'floor': 3, 'view': None}</arg_value>"
                   "<arg_key>room</arg_key><arg_value>007</arg_value><arg_key>note</arg_key><arg_value>null</arg_value>"
                   "<arg_key>extra</arg_key><arg_value>5</arg_value></tool_call>", None,
                   [("book", {"guests": 2, "price": 99.5, "vip": True, "dates": ["2025-01-01", "2025-01-02"],
                              "meta": {"floor": 3, "view": None}, "room": "007", "note": None, "extra": "5"})], tools=TOOLS),
    ToolParserCase("a value that does not fit its type stays a string",
                   "<tool_call>book<arg_key>guests</arg_key><arg_value>two</arg_value></tool_call>", None,
                   [("book", {"guests": "two"})], tools=TOOLS),
    ToolParserCase("unicode, escapes and markup in values",
                   "<tool_call>say<arg_key>text</arg_key><arg_value>naïve \"q\" \\ <b>🌍</b>\n日本</arg_value></tool_call>",
                   None, [("say", {"text": 'naïve "q" \\ <b>🌍</b>\n日本'})]),
    ToolParserCase("truncated final call stays content",
                   f"{TIME}<tool_call>get_weather<arg_key>city</arg_key><arg_value>Par", 
                   "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Par", [("get_time", {})]),
    ToolParserCase("a key without a value stays content", "<tool_call>f<arg_key>a</arg_key></tool_call>",
                   "<tool_call>f<arg_key>a</arg_key></tool_call>", []),
    ToolParserCase("no name stays content", "<tool_call><arg_key>a</arg_key><arg_value>1</arg_value></tool_call>",
                   "<tool_call><arg_key>a</arg_key><arg_value>1</arg_value></tool_call>", []),
    ToolParserCase("the tag in prose", "Use <tool_call> tags.", "Use <tool_call> tags.", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Glm45ToolParser, tokenizer, CASES)
