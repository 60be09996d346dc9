"""seed_oss: ``<seed:think>…</seed:think>``."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.seed_oss import SeedOssReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<seed:think>Budget is fine.</seed:think>Here you go.", "Budget is fine.", "Here you go."),
    ReasoningCase("no reasoning", "Direct answer <seed:tool_call> text", None, "Direct answer <seed:tool_call> text"),
    ReasoningCase("opening tag missing: content", "thoughts</seed:think>answer", None, "thoughts</seed:think>answer"),
    ReasoningCase("unterminated reasoning", "<seed:think>A </think> is not my end tag", "A </think> is not my end tag", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "<seed:think>a</seed:think>b", None, "<seed:think>a</seed:think>b", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(SeedOssReasoningParser, tokenizer, CASES)
