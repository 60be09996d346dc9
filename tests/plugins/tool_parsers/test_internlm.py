"""internlm: ``<|action_start|><|plugin|>{json}<|action_end|>``, arguments under ``parameters``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.internlm import InternlmToolParser

CASES = [
    ToolParserCase("no call", "A plain answer.", "A plain answer.", []),
    ToolParserCase("one call after text", 'I need the weather.<|action_start|><|plugin|>\n{"name": "get_weather", '
                   '"parameters": {"city": "上海"}}<|action_end|>', "I need the weather.", [("get_weather", {"city": "上海"})]),
    ToolParserCase("two actions", '<|action_start|><|plugin|>{"name": "a", "parameters": {}}<|action_end|>'
                   '<|action_start|><|plugin|>{"name": "b", "arguments": {"n": [1, {"m": "\\t"}]}}<|action_end|>', None,
                   [("a", {}), ("b", {"n": [1, {"m": "\t"}]})]),
    ToolParserCase("unterminated action stays content", '<|action_start|><|plugin|>{"name": "a", "parameters": {}}',
                   '<|action_start|><|plugin|>{"name": "a", "parameters": {}}', []),
    ToolParserCase("malformed stays content", "<|action_start|><|plugin|>{oops}<|action_end|>",
                   "<|action_start|><|plugin|>{oops}<|action_end|>", []),
    ToolParserCase("action start without plugin is content", "<|action_start|><|interpreter|>print(1)<|action_end|>",
                   "<|action_start|><|interpreter|>print(1)<|action_end|>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(InternlmToolParser, tokenizer, CASES)
