"""longcat: ``<longcat_tool_call>{json}</longcat_tool_call>`` blocks."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.longcat import LongcatToolParser

CASES = [
    ToolParserCase("no call", "LongCat says hi.", "LongCat says hi.", []),
    ToolParserCase("one call after text", 'Let me see.\n<longcat_tool_call>\n{"name": "lookup", "arguments": {"id": 7}}\n'
                   "</longcat_tool_call>", "Let me see.", [("lookup", {"id": 7})]),
    ToolParserCase("parallel calls", '<longcat_tool_call>{"name": "a", "arguments": {"s": "𝔘"}}</longcat_tool_call>\n'
                   '<longcat_tool_call>{"name": "b", "arguments": {"n": {"m": [0.5]}}}</longcat_tool_call>', None,
                   [("a", {"s": "𝔘"}), ("b", {"n": {"m": [0.5]}})]),
    ToolParserCase("no arguments", '<longcat_tool_call>{"name": "now"}</longcat_tool_call>', None, [("now", {})]),
    ToolParserCase("unterminated stays content", '<longcat_tool_call>{"name": "now"}', '<longcat_tool_call>{"name": "now"}', []),
    ToolParserCase("malformed stays content", "<longcat_tool_call>now()</longcat_tool_call>",
                   "<longcat_tool_call>now()</longcat_tool_call>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(LongcatToolParser, tokenizer, CASES)
