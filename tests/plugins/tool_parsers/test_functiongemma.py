"""functiongemma: ``<start_function_call>call:NAME{k:<escape>v<escape>,n:1}<end_function_call>``."""

from __future__ import annotations

import pytest

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.functiongemma import FunctionGemmaToolParser, read_arguments

S, E, ESC = "<start_function_call>", "<end_function_call>", "<escape>"
WEATHER = f"{S}call:get_weather{{city:{ESC}Paris{ESC},days:3}}{E}"
TIME = f"{S}call:get_time{{}}{E}"
PARIS = {"city": "Paris", "days": 3}
CASES = [
    ToolParserCase("no call", "Hello there!", "Hello there!", []),
    ToolParserCase("one call after text", f"Sure.\n{WEATHER}", "Sure.", [("get_weather", PARIS)]),
    ToolParserCase("parallel calls", f"{WEATHER}{TIME}", None, [("get_weather", PARIS), ("get_time", {})]),
    ToolParserCase("text between and after calls", f"{TIME} then {WEATHER} ok", "then  ok",
                   [("get_time", {}), ("get_weather", PARIS)]),
    ToolParserCase("nested, unicode, escaped and typed values",
                   f"{S}call:book{{who:{ESC}Zoë \"Q\" \\ {{x:1}}, 🌍 日本{ESC},n:-2.5e1,ok:true,no:false,none:null,"
                   f"dates:[{ESC}a{ESC}, {ESC}b{ESC}],room:{{floor:3,tags:[]}},}}{E}", None,
                   [("book", {"who": 'Zoë "Q" \\ {x:1}, 🌍 日本', "n": -25.0, "ok": True, "no": False, "none": None,
                              "dates": ["a", "b"], "room": {"floor": 3, "tags": []}})]),
    ToolParserCase("bare words are strings", f"{S}call:f{{unit:celsius, city: New York}}{E}", None,
                   [("f", {"unit": "celsius", "city": "New York"})]),
    ToolParserCase("end marker dropped as a stop token: complete braces still a call", f"{S}call:get_time{{}}", None,
                   [("get_time", {})]),
    ToolParserCase("truncated final call stays content", f"{TIME}{S}call:get_weather{{city:{ESC}Par",
                   f"{S}call:get_weather{{city:{ESC}Par", [("get_time", {})]),
    ToolParserCase("unbalanced braces stay content", f"{S}call:f{{a:{{b:1}}{E}", f"{S}call:f{{a:{{b:1}}{E}", []),
    ToolParserCase("not a call: stays content", f"{S}get_weather(city='Paris'){E}", f"{S}get_weather(city='Paris'){E}", []),
    ToolParserCase("text after the braces stays content", f"{S}call:f{{}} extra{E}", f"{S}call:f{{}} extra{E}", []),
]


def test_conformance(tokenizer):
    check_tool_parser(FunctionGemmaToolParser, tokenizer, CASES)


@pytest.mark.parametrize("bad", ["{a}", "{:1}", "{a:1", "{a:<escape>x}", "{a:[1,}", "{a:" + "[" * 100 + "]" * 100 + "}"])
def test_read_arguments_rejects_malformed(bad):
    with pytest.raises(ValueError):
        read_arguments(bad)
