"""olmo3: ``<think>…</think>`` as ordinary text."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.olmo3 import Olmo3ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<think>Okay, so the question is simple.</think>Yes.",
                  "Okay, so the question is simple.", "Yes."),
    ReasoningCase("no reasoning", "No.", None, "No."),
    ReasoningCase("opening tag missing: content", "a</think>b", None, "a</think>b"),
    ReasoningCase("unterminated reasoning", "<think>Wait, maybe", "Wait, maybe", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "<think>kept</think>", None, "<think>kept</think>", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(Olmo3ReasoningParser, tokenizer, CASES)
