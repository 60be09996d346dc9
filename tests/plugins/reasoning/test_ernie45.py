"""ernie45: ``<think>…</think>`` then an optional ``<response>…</response>``."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.ernie45 import Ernie45ReasoningParser

CALL = '<tool_call>\n{"name": "search", "arguments": {"q": "ERNIE"}}\n</tool_call>'

CASES = [
    ReasoningCase("reasoning then answer", "<think>\nEasy.\n</think>\n\n<response>\nThe sum is 10.\n</response>\n",
                  "\nEasy.\n", "The sum is 10."),
    ReasoningCase("answer without response tags", "<think>ok</think>\n\nThe sum is 10.", "ok", "\n\nThe sum is 10."),
    ReasoningCase("reasoning then tool call", f"<think>Search it.</think>\n\n{CALL}", "Search it.", f"\n\n{CALL}"),
    ReasoningCase("no reasoning", "<response>Hi</response>", None, "Hi"),
    ReasoningCase("opening tag missing: content", "x</think>y", None, "x</think>y"),
    ReasoningCase("unterminated reasoning", "<think>Hmm <respo", "Hmm <respo", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled", "Plain.", None, "Plain.", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(Ernie45ReasoningParser, tokenizer, CASES)
