"""granite: plain-text "Here is my thought process:" / "Here is my response:" headers."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.granite import GraniteReasoningParser

CASES = [
    ReasoningCase("reasoning then answer",
                  "Here is my thought process:\nThe user asks for a synonym.\n\nHere is my response:\nGlad.",
                  "\nThe user asks for a synonym.\n\n", "\nGlad."),
    ReasoningCase("contracted headers", "Here's my thought process: short. Here's my response: done",
                  " short. ", " done"),
    ReasoningCase("no reasoning", "Here is a list: a, b, c.", None, "Here is a list: a, b, c."),
    ReasoningCase("opening header missing: content", "just text Here is my response: x", None,
                  "just text Here is my response: x"),
    ReasoningCase("unterminated reasoning", "Here is my thought process:\nFirst, Here is my", "\nFirst, Here is my", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "Here is my thought process: no", None, "Here is my thought process: no", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(GraniteReasoningParser, tokenizer, CASES)


def test_thinking_follows_the_granite_kwarg():
    assert GraniteReasoningParser.thinking_from_kwargs({}) is False
    assert GraniteReasoningParser.thinking_from_kwargs({"thinking": True}) is True
