"""cohere_command3: thinking markers around reasoning, response markers around the answer."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.cohere_command3 import CohereCommand3ReasoningParser

ACTION = '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "search", "parameters": {}}]<|END_ACTION|>'

CASES = [
    ReasoningCase("reasoning then answer",
                  "<|START_THINKING|>The user asks about tides.<|END_THINKING|><|START_RESPONSE|>Tides come from the moon.<|END_RESPONSE|>",
                  "The user asks about tides.", "Tides come from the moon."),
    ReasoningCase("reasoning then action", f"<|START_THINKING|>Search first.<|END_THINKING|>{ACTION}", "Search first.", ACTION),
    ReasoningCase("no reasoning", "<|START_RESPONSE|>Hello.<|END_RESPONSE|>", None, "Hello."),
    ReasoningCase("opening marker missing: content", "x<|END_THINKING|>y", None, "x<|END_THINKING|>y"),
    ReasoningCase("unterminated reasoning", "<|START_THINKING|>Step one <|END_THI", "Step one <|END_THI", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "<|START_RESPONSE|>Hi<|END_RESPONSE|>", None, "Hi", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(CohereCommand3ReasoningParser, tokenizer, CASES)
