"""deepseek_v3: DeepSeek-R1 behaviour when thinking is on, all content when it is off."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.deepseek_v3 import DeepSeekV3ReasoningParser

CASES = [
    ReasoningCase("reasoning then answer", "<think>Two options; pick B.</think>Option B.", "Two options; pick B.", "Option B."),
    ReasoningCase("no reasoning", "</think>Sure, here it is.", None, "Sure, here it is."),
    ReasoningCase("opening tag missing (template prefilled it)", "Check units first.</think>42 m/s",
                  "Check units first.", "42 m/s"),
    ReasoningCase("unterminated reasoning", "<think>Let me list the primes: 2, 3, 5,", "Let me list the primes: 2, 3, 5,", None,
                  reasoning_ended=False),
    ReasoningCase("thinking disabled (the default)", "Plain answer with a stray </think> tag.", None,
                  "Plain answer with a stray </think> tag.", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(DeepSeekV3ReasoningParser, tokenizer, CASES)


def test_thinking_is_off_unless_asked():
    assert DeepSeekV3ReasoningParser.thinking_from_kwargs(None) is False
    assert DeepSeekV3ReasoningParser.thinking_from_kwargs({"thinking": True}) is True
    assert DeepSeekV3ReasoningParser.thinking_from_kwargs({"enable_thinking": True}) is True
    assert DeepSeekV3ReasoningParser.thinking_from_kwargs({"thinking": False, "enable_thinking": True}) is False
