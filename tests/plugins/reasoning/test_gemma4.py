"""gemma4: ``<|channel>thought\n…<channel|>`` then the answer."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.gemma4 import Gemma4ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<|channel>thought\nThe user wants a fact.<channel|>Water boils at 100 °C.",
                  "The user wants a fact.", "Water boils at 100 °C."),
    ReasoningCase("header without newline", "<|channel>thought short<channel|>ok", " short", "ok"),
    ReasoningCase("no reasoning", "Water boils at 100 °C.", None, "Water boils at 100 °C."),
    ReasoningCase("opening marker missing: content", "x<channel|>y", None, "x<channel|>y"),
    ReasoningCase("unterminated reasoning", "<|channel>thought\nBoiling point depends on <chan", "Boiling point depends on <chan", None,
                  reasoning_ended=False),
    ReasoningCase("output cut inside the header", "<|channel>thou", None, "<|channel>thou"),
    ReasoningCase("thinking disabled", "<|channel>thought\nx<channel|>y", None, "<|channel>thought\nx<channel|>y",
                  thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(Gemma4ReasoningParser, tokenizer, CASES)
