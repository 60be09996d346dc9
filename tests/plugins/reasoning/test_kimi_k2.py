"""kimi_k2: ``<think>…</think>``; a tool-call section after it stays in content."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.kimi_k2 import KimiK2ReasoningParser

CALLS = ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
         '{"city": "Beijing"}<|tool_call_end|><|tool_calls_section_end|>')

CASES = [
    ReasoningCase("reasoning then answer", "<think>User wants weather.</think>Let me check.", "User wants weather.",
                  "Let me check."),
    ReasoningCase("reasoning then tool calls", f"<think>Call the tool.</think>{CALLS}", "Call the tool.", CALLS),
    ReasoningCase("no reasoning", CALLS, None, CALLS),
    ReasoningCase("opening tag missing: content", "r</think>c", None, "r</think>c"),
    ReasoningCase("unterminated reasoning", "<think>Considering options", "Considering options", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "<think>a</think>b", None, "<think>a</think>b", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(KimiK2ReasoningParser, tokenizer, CASES)
