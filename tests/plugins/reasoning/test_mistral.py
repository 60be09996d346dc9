"""mistral (Magistral): ``[THINK]…[/THINK]``."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.mistral import MistralReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "[THINK]The user wants a haiku.[/THINK]Autumn moonlight —", "The user wants a haiku.",
                  "Autumn moonlight —"),
    ReasoningCase("no reasoning", "Bonjour ! [TOOL_CALLS] stays content", None, "Bonjour ! [TOOL_CALLS] stays content"),
    ReasoningCase("opening tag missing: content", "draft[/THINK]final", None, "draft[/THINK]final"),
    ReasoningCase("unterminated reasoning", "[THINK]Consider [brackets] and [/THIN", "Consider [brackets] and [/THIN", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "[THINK]x[/THINK]y", None, "[THINK]x[/THINK]y", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(MistralReasoningParser, tokenizer, CASES)
