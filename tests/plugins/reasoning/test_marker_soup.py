"""Random strings of every format's markers: each parser streams exactly what it parses.

The per-format tests fix the meaning; this one hunts for chunking dependence on the odd inputs
nobody writes by hand (markers cut, repeated, nested, out of order).
"""

from __future__ import annotations

import random

import pytest

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from tests.plugins.reasoning.declared import FORMATS, declared, load_target

ATOMS = (
    "<think>", "</think>", "<tool_call>", "[THINK]", "[/THINK]", "<seed:think>", "</seed:think>",
    "<answer>", "</answer>", "<response>", "</response>", "<|START_THINKING|>", "<|END_THINKING|>",
    "<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|channel>thought\n", "<channel|>", "<|channel|>",
    "<|message|>", "<|end|>", "<|start|>", "assistant", "analysis", "final", "commentary to=functions.f",
    "<|return|>", "<|call|>", "Here is my thought process:", "Here's my response:", " ", "\n", "x", "<", "<|", "é",
)


@pytest.mark.parametrize("name", FORMATS)
def test_streaming_matches_parse_on_marker_soup(name, tokenizer):
    cls = load_target(declared()[name])
    rng = random.Random(name)
    cases = []
    for i in range(40):
        text = "".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 10)))
        thinking = i % 4 != 0
        reasoning, content = cls(tokenizer, thinking=thinking).parse(text)
        cases.append(ReasoningCase(f"soup {i}", text, reasoning, content, thinking))
    check_reasoning_parser(cls, tokenizer, cases, random_splits=2)
