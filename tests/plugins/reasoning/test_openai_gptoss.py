"""openai_gptoss: Harmony ``analysis`` → reasoning, ``final`` → content, tool calls kept verbatim."""

from __future__ import annotations

from heron.testing.reasoning_parsers import ReasoningCase, check_reasoning_parser
from heron_plugins.reasoning.openai_gptoss import GptOssReasoningParser

ANALYSIS = "<|channel|>analysis<|message|>User asks for the weather; call the tool.<|end|>"
CALL = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>'

CASES = [
    ReasoningCase("reasoning then answer",
                  f"{ANALYSIS}<|start|>assistant<|channel|>final<|message|>It is sunny in Paris.<|return|>",
                  "User asks for the weather; call the tool.", "It is sunny in Paris."),
    ReasoningCase("reasoning then tool call", f"{ANALYSIS}<|start|>assistant{CALL}",
                  "User asks for the weather; call the tool.", CALL),
    ReasoningCase("no reasoning", "<|channel|>final<|message|>Hi!", None, "Hi!"),
    ReasoningCase("no channel header: content", "Plain text answer.", None, "Plain text answer."),
    ReasoningCase("unterminated reasoning", "<|channel|>analysis<|message|>We need to think <|en", "We need to think <|en", None,
                  reasoning_ended=False),
    ReasoningCase("cut inside a header", "<|channel|>analysis<|message|>r<|end|><|start|>assistant<|channel|>fin",
                  "r", "<|channel|>fin"),
    ReasoningCase("message with no channel", "<|start|>assistant<|message|>hello<|end|>", None, "hello"),
    ReasoningCase("analysis with a recipient is a tool call", "<|channel|>analysis to=python<|message|>print(1)<|call|>",
                  None, "<|channel|>analysis to=python<|message|>print(1)<|call|>"),
    ReasoningCase("thinking flag is ignored: channels still split",
                  "<|channel|>analysis<|message|>brief<|end|><|start|>assistant<|channel|>final<|message|>ok",
                  "brief", "ok", thinking=False),
]


def test_conformance(tokenizer):
    check_reasoning_parser(GptOssReasoningParser, tokenizer, CASES)
