"""seed_oss: Qwen3-Coder's XML inside ``<seed:tool_call>`` … ``</seed:tool_call>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.seed_oss import SeedOssToolParser

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "opts": {"type": "object"}}}}}]
WEATHER = ("<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris</parameter>\n"
           "<parameter=days>3</parameter>\n</function>\n</seed:tool_call>")
TIME = "<seed:tool_call>\n<function=get_time>\n</function>\n</seed:tool_call>"
CASES = [
    ToolParserCase("no call", "Seed answers directly.", "Seed answers directly.", []),
    ToolParserCase("one call after text", f"Let me check.\n{WEATHER}", "Let me check.",
                   [("get_weather", {"city": "Paris", "days": 3})]),
    ToolParserCase("parallel calls", f"{WEATHER}{TIME}", None, [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]),
    ToolParserCase("text between and after calls", f"{TIME} and {WEATHER} done", "and  done",
                   [("get_time", {}), ("get_weather", {"city": "Paris", "days": 3})]),
    ToolParserCase("nested, unicode and escaped values",
                   "<seed:tool_call><function=get_weather><parameter=city>Zürich \"🌍\" \\ 日本</parameter>"
                   "<parameter=opts>{\"units\": [\"c\"], \"deep\": {\"x\": null}}</parameter></function></seed:tool_call>",
                   None, [("get_weather", {"city": 'Zürich "🌍" \\ 日本', "opts": {"units": ["c"], "deep": {"x": None}}})]),
    ToolParserCase("a Qwen3 <tool_call> block is not this format", "<tool_call><function=f></function></tool_call>",
                   "<tool_call><function=f></function></tool_call>", []),
    ToolParserCase("truncated final call stays content", f"{TIME}<seed:tool_call><function=get_weather><parameter=ci",
                   "<seed:tool_call><function=get_weather><parameter=ci", [("get_time", {})]),
    ToolParserCase("malformed block stays content", "<seed:tool_call>get_weather(city=1)</seed:tool_call>",
                   "<seed:tool_call>get_weather(city=1)</seed:tool_call>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(SeedOssToolParser, tokenizer, CASES, tools=TOOLS)
