"""deepseek_v32: DSML ``invoke``/``parameter`` elements; ``string="false"`` values are JSON."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.deepseek_v32 import DeepSeekV32ToolParser

BEGIN, END = "<｜DSML｜function_calls>", "</｜DSML｜function_calls>"


def param(key: str, value: str, string: bool = True) -> str:
    return f'<｜DSML｜parameter name="{key}" string="{"true" if string else "false"}">{value}</｜DSML｜parameter>'


def invoke(name: str, *params: str) -> str:
    return f'<｜DSML｜invoke name="{name}">\n' + "\n".join(params) + "\n</｜DSML｜invoke>"


WEATHER = invoke("get_weather", param("city", "Paris"), param("days", "3", string=False))
TIME = invoke("get_time")
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
    "n": {"type": "integer"}, "s": {"type": "string"}}}}}]
CASES = [
    ToolParserCase("no call", "No tools needed.", "No tools needed.", []),
    ToolParserCase("one call after text", f"Let me check.\n\n{BEGIN}\n{WEATHER}\n{END}", "Let me check.",
                   [("get_weather", {"city": "Paris", "days": 3})]),
    ToolParserCase("parallel calls", f"{BEGIN}\n{WEATHER}\n{TIME}\n{END}", None,
                   [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]),
    ToolParserCase("text after the section", f"{BEGIN}{TIME}{END}\nDone.", "Done.", [("get_time", {})]),
    ToolParserCase("nested, unicode and escaped values",
                   BEGIN + invoke("search", param("q", 'naïve "quotes" \\ {json} 🌍\nline 2'),
                                  param("filters", '{"tags": ["日本"], "exact": true, "page": null}', string=False),
                                  param("raw", "not json", string=False)) + END, None,
                   [("search", {"q": 'naïve "quotes" \\ {json} 🌍\nline 2',
                                "filters": {"tags": ["日本"], "exact": True, "page": None}, "raw": "not json"})]),
    ToolParserCase("string=\"true\" keeps digits as text", BEGIN + invoke("f", param("n", "007")) + END, None,
                   [("f", {"n": "007"})]),
    ToolParserCase("no string attribute: the schema decides",
                   BEGIN + '<｜DSML｜invoke name="f"><｜DSML｜parameter name="n">42</｜DSML｜parameter>'
                   '<｜DSML｜parameter name="s">42</｜DSML｜parameter></｜DSML｜invoke>' + END, None,
                   [("f", {"n": 42, "s": "42"})], tools=TOOLS),
    ToolParserCase("truncated final call stays content, earlier calls are kept",
                   f'{BEGIN}\n{TIME}\n<｜DSML｜invoke name="f">\n{param("a", "x")}\n<｜DSML｜parameter name="b" string="true">hal',
                   f'<｜DSML｜invoke name="f">\n{param("a", "x")}\n<｜DSML｜parameter name="b" string="true">hal',
                   [("get_time", {})]),
    ToolParserCase("invoke without a name stays content", f"{BEGIN}<｜DSML｜invoke>{param('a', 'x')}</｜DSML｜invoke>{END}",
                   f"<｜DSML｜invoke>{param('a', 'x')}</｜DSML｜invoke>", []),
    ToolParserCase("stray text inside an invoke stays content",
                   f'{BEGIN}<｜DSML｜invoke name="f">oops{param("a", "x")}</｜DSML｜invoke>{END}',
                   f'<｜DSML｜invoke name="f">oops{param("a", "x")}</｜DSML｜invoke>', []),
]


def test_conformance(tokenizer):
    check_tool_parser(DeepSeekV32ToolParser, tokenizer, CASES)
