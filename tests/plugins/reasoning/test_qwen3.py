"""qwen3: ``<think>…</think>`` only when the output opens the block; enable_thinking=false → content."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.qwen3 import Qwen3ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<think>\nOkay, the user asks for 7*6.\n</think>\n\n7 × 6 = 42.",
                  "\nOkay, the user asks for 7*6.\n", "\n\n7 × 6 = 42."),
    ReasoningCase("leading whitespace before the tag", "\n<think>x</think>y", "x", "y"),
    ReasoningCase("no reasoning", "The answer is 42.", None, "The answer is 42."),
    ReasoningCase("empty think block", "<think>\n\n</think>\n\nHi!", "\n\n", "\n\nHi!"),
    ReasoningCase("opening tag missing: not reasoning for qwen3", "I should greet.</think>Hello!", None,
                  "I should greet.</think>Hello!"),
    ReasoningCase("unterminated reasoning", "<think>Step 1: parse the input. Step 2:", "Step 1: parse the input. Step 2:", None,
                  reasoning_ended=False),
    ReasoningCase("output cut inside the opening tag", "<thi", None, "<thi"),
    ReasoningCase("thinking disabled", "<think>not parsed</think>all content", None, "<think>not parsed</think>all content",
                  thinking=False),
    ReasoningCase("tool call after reasoning stays in content",
                  '<think>Need weather.</think>\n<tool_call>\n{"name": "w", "arguments": {}}\n</tool_call>',
                  "Need weather.", '\n<tool_call>\n{"name": "w", "arguments": {}}\n</tool_call>'),
]


def test_conformance(tokenizer):
    check_reasoning_parser(Qwen3ReasoningParser, tokenizer, CASES)


def test_thinking_is_on_unless_turned_off():
    assert Qwen3ReasoningParser.thinking_from_kwargs({}) is True
    assert Qwen3ReasoningParser.thinking_from_kwargs({"enable_thinking": False}) is False
