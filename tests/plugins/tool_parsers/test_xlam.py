"""xlam: a JSON array of calls, bare, fenced, after ``</think>``, after ``[TOOL_CALLS]`` or in ``<tool_call>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.xlam import XlamToolParser

CALLS = '[{"name": "get_weather", "arguments": {"city": "Berlin"}}, {"name": "get_time", "arguments": {}}]'
BOTH = [("get_weather", {"city": "Berlin"}), ("get_time", {})]
CASES = [
    ToolParserCase("no call", "Berlin is in Germany [citation needed].", "Berlin is in Germany [citation needed].", []),
    ToolParserCase("bare array", CALLS, None, BOTH),
    ToolParserCase("bare array then text", f"{CALLS}\nAnything else?", "Anything else?", BOTH),
    ToolParserCase("json fence after text", f"Here you go:\n```json\n{CALLS}\n```", "Here you go:", BOTH),
    ToolParserCase("after </think>", f"</think>\n{CALLS}", None, BOTH),
    ToolParserCase("after [TOOL_CALLS]", f"[TOOL_CALLS]{CALLS}", None, BOTH),
    ToolParserCase("inside <tool_call>", '<tool_call>{"name": "one", "arguments": {"s": "ü \\"q\\" {[", "n": {"k": [null]}}}</tool_call>',
                   None, [("one", {"s": 'ü "q" {[', "n": {"k": [None]}})]),
    ToolParserCase("truncated bare array stays content", '[{"name": "a", "arguments": {"x"', '[{"name": "a", "arguments": {"x"', []),
    ToolParserCase("a fence with other JSON stays content", '```json\n{"result": 1}\n```', '```json\n{"result": 1}\n```', []),
    ToolParserCase("prose after </think> stays content", "</think>\nThe answer is 4.", "</think>\nThe answer is 4.", []),
    ToolParserCase("an array of numbers stays content", "[1, 2, 3]", "[1, 2, 3]", []),
]


def test_conformance(tokenizer):
    check_tool_parser(XlamToolParser, tokenizer, CASES)
