"""lfm2: ``<|tool_call_start|>[pythonic list]<|tool_call_end|>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.lfm2 import Lfm2ToolParser

CASES = [
    ToolParserCase("no call", "Hi! How can I help?", "Hi! How can I help?", []),
    ToolParserCase("one call", '<|tool_call_start|>[get_status(id="42")]<|tool_call_end|>Checking the status.',
                   "Checking the status.", [("get_status", {"id": "42"})]),
    ToolParserCase("parallel calls after text", "Sure.<|tool_call_start|>[a(n=1), b(t=True, u='ü\\n')]<|tool_call_end|>", "Sure.",
                   [("a", {"n": 1}), ("b", {"t": True, "u": "ü\n"})]),
    ToolParserCase("nested and empty", "<|tool_call_start|>[f(m={'x': [[]]}), g()]<|tool_call_end|>", None,
                   [("f", {"m": {"x": [[]]}}), ("g", {})]),
    ToolParserCase("unterminated stays content", "<|tool_call_start|>[f()]", "<|tool_call_start|>[f()]", []),
    ToolParserCase("malformed stays content", "<|tool_call_start|>[f(x=open('/etc/passwd'))]<|tool_call_end|>",
                   "<|tool_call_start|>[f(x=open('/etc/passwd'))]<|tool_call_end|>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Lfm2ToolParser, tokenizer, CASES)
