"""glm45: ``<think>…</think>``, and a ``<tool_call>`` also ends reasoning (kept in content)."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.glm45 import Glm45ReasoningParser

CALL = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"

CASES = [
    ReasoningCase("reasoning then answer", "<think>Simple greeting.</think>\nHello!", "Simple greeting.", "\nHello!"),
    ReasoningCase("reasoning then tool call", f"<think>I need the weather.</think>{CALL}", "I need the weather.", CALL),
    ReasoningCase("tool call ends unterminated reasoning", f"<think>I need the weather.\n{CALL}",
                  "I need the weather.\n", CALL),
    ReasoningCase("no reasoning", "Hello there.", None, "Hello there."),
    ReasoningCase("opening tag missing: content", "thinking…</think>answer", None, "thinking…</think>answer"),
    ReasoningCase("unterminated reasoning", "<think>Let me think about <tool_ calls", "Let me think about <tool_ calls", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", CALL, None, CALL, thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(Glm45ReasoningParser, tokenizer, CASES)
