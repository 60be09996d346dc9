"""hunyuan_a13b: ``<think>…</think>`` then ``<answer>…</answer>``, answer tags dropped."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.hunyuan_a13b import HunyuanA13BReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<think>\nThe user greets.\n</think>\n<answer>\nHello!\nHow are you?\n</answer>",
                  "\nThe user greets.\n", "Hello!\nHow are you?"),
    ReasoningCase("no reasoning, wrapped answer", "<answer>Only an answer.</answer>", None, "Only an answer."),
    ReasoningCase("no reasoning, bare answer", "Bare text with <answer> inside", None, "Bare text with <answer> inside"),
    ReasoningCase("opening tag missing: content", "x</think><answer>y</answer>", None, "x</think><answer>y</answer>"),
    ReasoningCase("unterminated reasoning", "<think>Long derivation", "Long derivation", None,
                  reasoning_ended=False),
    ReasoningCase("unterminated answer", "<think>r</think>\n<answer>\nPartial ans", "r", "Partial ans"),
    ReasoningCase("text after the answer", "<think>r</think><answer>a</answer>\n\nP.S. more", "r", "a\n\nP.S. more"),
    ReasoningCase("thinking disabled, answer still unwrapped", "<answer>\nHi\n</answer>\n", None, "Hi", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(HunyuanA13BReasoningParser, tokenizer, CASES)
