"""phi4_mini_json: ``functools[{json}, …]``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.phi4_mini_json import Phi4MiniJsonToolParser

CASES = [
    ToolParserCase("no call", "The functools module is handy.", "The functools module is handy.", []),
    ToolParserCase("one call", 'functools[{"name": "get_weather", "arguments": {"city": "Seattle"}}]', None,
                   [("get_weather", {"city": "Seattle"})]),
    ToolParserCase("parallel after text, parameters alias", 'Calling.\nfunctools[{"name": "a", "parameters": {"l": [1, 2]}}, '
                   '{"name": "b", "arguments": {"t": "≈ \\\\"}}]', "Calling.", [("a", {"l": [1, 2]}), ("b", {"t": "≈ \\"})]),
    ToolParserCase("empty arguments", 'functools[{"name": "ping", "arguments": {}}]', None, [("ping", {})]),
    ToolParserCase("truncated stays content", 'functools[{"name": "a", "arguments": {}}', 'functools[{"name": "a", "arguments": {}}', []),
    ToolParserCase("malformed stays content", 'functools[{"name": "a", "arguments": {1: 2}}]', 'functools[{"name": "a", "arguments": {1: 2}}]',
                   []),
]


def test_conformance(tokenizer):
    check_tool_parser(Phi4MiniJsonToolParser, tokenizer, CASES)
