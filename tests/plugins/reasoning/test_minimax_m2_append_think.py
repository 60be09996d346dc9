"""minimax_m2_append_think: everything is content, ``<think>`` put back in front."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.minimax_m2_append_think import MiniMaxM2AppendThinkReasoningParser

P = MiniMaxM2AppendThinkReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "Plan it.\n</think>\n\nDone.", None, "<think>Plan it.\n</think>\n\nDone."),
    ReasoningCase("no reasoning", "</think>Hi", None, "<think></think>Hi"),
    ReasoningCase("model wrote the opening tag itself", "<think>r</think>c", None, "<think>r</think>c"),
    ReasoningCase("opening tag missing (template prefilled it)", "r</think>c", None, "<think>r</think>c"),
    ReasoningCase("unterminated reasoning", "<thin", None, "<think><thin"),
    ReasoningCase("empty output", "", None, "<think>"),
    ReasoningCase("thinking disabled", "Answer only.", None, "Answer only.", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(P, tokenizer, CASES)


def test_reasoning_ends_after_the_closing_tag(tokenizer):
    ids = tokenizer.encode("abc</think>x", add_special_tokens=False)
    parser = P(tokenizer)
    assert not parser.is_reasoning_end(tokenizer.encode("abc</th", add_special_tokens=False))
    assert P(tokenizer).is_reasoning_end(ids)
