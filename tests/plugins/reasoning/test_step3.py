"""step3: everything before ``</think>`` is reasoning."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.step3 import Step3ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "Look at the image carefully.</think>A red bicycle.",
                  "Look at the image carefully.", "A red bicycle."),
    ReasoningCase("no reasoning", "</think>A red bicycle.", None, "A red bicycle."),
    ReasoningCase("opening tag present", "<think>\nhmm</think>ok", "\nhmm", "ok"),
    ReasoningCase("unterminated reasoning", "The picture shows", "The picture shows", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "A red bicycle.", None, "A red bicycle.", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(Step3ReasoningParser, tokenizer, CASES)
