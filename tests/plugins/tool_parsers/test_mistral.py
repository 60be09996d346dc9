"""mistral: ``[TOOL_CALLS]name[ARGS]{json}`` (new) or ``[TOOL_CALLS][{…}]`` (old); ids are 9 alphanumerics."""

from __future__ import annotations

import re

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.mistral import MistralToolParser

CASES = [
    ToolParserCase("no call", "Bonjour ! [Note] rien à faire.", "Bonjour ! [Note] rien à faire.", []),
    ToolParserCase("new layout, one call", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}', None,
                   [("get_weather", {"city": "Paris", "unit": "celsius"})]),
    ToolParserCase("new layout, parallel calls after text",
                   'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}', "Let me check.",
                   [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    ToolParserCase("new layout with a call id", '[TOOL_CALLS]f[CALL_ID]a1B2c3D4e[ARGS]{"x": [1, {"y": "日本\\n"}]}', None,
                   [("f", {"x": [1, {"y": "日本\n"}]})]),
    ToolParserCase("old layout, parallel", '[TOOL_CALLS] [{"name": "a", "arguments": {"q": "\\"x\\""}}, {"name": "b", "arguments": {}}]',
                   None, [("a", {"q": '"x"'}), ("b", {})]),
    ToolParserCase("old layout, text after", '[TOOL_CALLS][{"name": "a", "arguments": {}}]\nDone.', "Done.", [("a", {})]),
    ToolParserCase("new layout, truncated arguments stay content", '[TOOL_CALLS]get_weather[ARGS]{"city": "Pa',
                   '[TOOL_CALLS]get_weather[ARGS]{"city": "Pa', []),
    ToolParserCase("truncated name stays content", "[TOOL_CALLS]get_wea", "[TOOL_CALLS]get_wea", []),
    ToolParserCase("prose after the marker stays content", "[TOOL_CALLS] I cannot call tools here.",
                   "[TOOL_CALLS] I cannot call tools here.", []),
    ToolParserCase("malformed old layout stays content", '[TOOL_CALLS][{"name": "a", "arguments": {]}]',
                   '[TOOL_CALLS][{"name": "a", "arguments": {]}]', []),
    ToolParserCase("arguments that are not an object stay content", "[TOOL_CALLS]f[ARGS][1, 2]", "[TOOL_CALLS]f[ARGS][1, 2]", []),
]


def test_conformance(tokenizer):
    check_tool_parser(MistralToolParser, tokenizer, CASES)


def test_ids_are_nine_alphanumerics_or_the_models_own():
    parser = MistralToolParser(None)
    calls = parser.parse('[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[CALL_ID]Zz9Zz9Zz9[ARGS]{}').tool_calls
    assert re.fullmatch(r"[A-Za-z0-9]{9}", calls[0].id)
    assert calls[1].id == "Zz9Zz9Zz9"
