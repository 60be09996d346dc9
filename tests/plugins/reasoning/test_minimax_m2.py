"""minimax_m2: only ``</think>`` is emitted; everything before it is reasoning."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.minimax_m2 import MiniMaxM2ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "The user wants JSON.\n</think>\n\n{\"ok\": true}", "The user wants JSON.\n",
                  "\n\n{\"ok\": true}"),
    ReasoningCase("explicit opening tag tolerated", "<think>r</think>c", "r", "c"),
    ReasoningCase("no reasoning", "</think>Just the answer.", None, "Just the answer."),
    ReasoningCase("opening tag missing (template prefilled it)", "plan: a, b</think>done", "plan: a, b", "done"),
    ReasoningCase("unterminated reasoning", "Still thinking about </thin", "Still thinking about </thin", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "a</think>b", None, "a</think>b", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(MiniMaxM2ReasoningParser, tokenizer, CASES)
