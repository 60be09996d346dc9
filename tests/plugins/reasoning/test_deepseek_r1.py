"""deepseek_r1: reasoning until ``</think>``; the template prefilled ``<think>``."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.deepseek_r1 import DeepSeekR1ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<think>\nThe user says hi; greet back.\n</think>\n\nHello! How can I help?",
                  "\nThe user says hi; greet back.\n", "\n\nHello! How can I help?"),
    ReasoningCase("no reasoning (empty think block)", "</think>Paris is the capital of France.",
                  None, "Paris is the capital of France."),
    ReasoningCase("opening tag missing (template prefilled it)", "Let me compute 2+2 = 4.\n</think>\n\n**4**",
                  "Let me compute 2+2 = 4.\n", "\n\n**4**"),
    ReasoningCase("unterminated reasoning (max_tokens)", "<think>First, the distance is 12 km; at 4 km/h that",
                  "First, the distance is 12 km; at 4 km/h that", None,
                  reasoning_ended=False),
    ReasoningCase("unterminated without any tag", "Hmm, the user wants a poem about <the sea>",
                  "Hmm, the user wants a poem about <the sea>", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "Hello! <think> is just text here </think> ok.", None,
                  "Hello! <think> is just text here </think> ok.", thinking=False),
    ReasoningCase("markers inside the answer stay", "<think>r</think>Use </think> and <think> literally.",
                  "r", "Use </think> and <think> literally."),
    ReasoningCase("unicode", "<think>日本語で考える ｜ é</think>答え：東京", "日本語で考える ｜ é", "答え：東京"),
    ReasoningCase("empty output", "", None, None),
]


def test_conformance(tokenizer):
    check_reasoning_parser(DeepSeekR1ReasoningParser, tokenizer, CASES)
