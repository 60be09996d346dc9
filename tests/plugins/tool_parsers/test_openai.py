"""openai (gpt-oss Harmony): messages ``to=functions.NAME`` are calls; other message bodies are content."""

from __future__ import annotations

import pytest

from heron.chat.pipeline import ChoicePipeline
from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.openai import OpenAIToolParser

A = "<|start|>assistant"


def call(name: str, args: str) -> str:
    return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>{args}<|call|>"


WEATHER = call("get_weather", '{"city": "Paris"}')
TIME = call("get_time", "{}")
THINK = "<|channel|>analysis<|message|>The user wants the weather.<|end|>"
CASES = [
    ToolParserCase("no call", "Plain content after the reasoning parser.", "Plain content after the reasoning parser.", []),
    ToolParserCase("a call after content (as left by the openai_gptoss reasoning parser)", f"Let me check.{WEATHER}",
                   "Let me check.", [("get_weather", {"city": "Paris"})]),
    ToolParserCase("raw Harmony: analysis is dropped, the call is read", f"{THINK}{A}{WEATHER}", None,
                   [("get_weather", {"city": "Paris"})]),
    ToolParserCase("raw Harmony: the final message body is the content",
                   f"{THINK}{A}<|channel|>final<|message|>It is 21 °C in Paris.<|return|>", "It is 21 °C in Paris.", []),
    ToolParserCase("recipient in the role part of the header",
                   f"{A} to=functions.get_time<|channel|>commentary <|constrain|>json<|message|>{{}}<|call|>", None,
                   [("get_time", {})]),
    ToolParserCase("parallel calls", f"{THINK}{A}{WEATHER}{A}{TIME}", None, [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    ToolParserCase("a preamble is content", f"<|channel|>commentary<|message|>Checking both.<|end|>{A}{WEATHER}{A}{TIME}",
                   "Checking both.", [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    ToolParserCase("nested, unicode and escaped arguments",
                   call("search", '{"q": "naïve \\"q\\" \\\\ <|x|> 🌍", "f": {"tags": ["日本"], "n": 1.5, "ok": false}}'), None,
                   [("search", {"q": 'naïve "q" \\ <|x|> 🌍', "f": {"tags": ["日本"], "n": 1.5, "ok": False}})]),
    ToolParserCase("empty body is {}", call("ping", ""), None, [("ping", {})]),
    ToolParserCase("a call ended by the next message, then a final answer",
                   f"<|channel|>commentary to=functions.f json<|message|>{{\"a\": 1}}{A}<|channel|>final<|message|>ok<|return|>",
                   "ok", [("f", {"a": 1})]),
    ToolParserCase("unclosed call with complete JSON at the end is a call",
                   "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}", None, [("f", {"a": 1})]),
    ToolParserCase("truncated final call stays content", f"{TIME}<|channel|>commentary to=functions.f json<|message|>{{\"a\": ",
                   "<|channel|>commentary to=functions.f json<|message|>{\"a\": ", [("get_time", {})]),
    ToolParserCase("invalid JSON stays content", call("f", "{oops}"), call("f", "{oops}"), []),
    ToolParserCase("a built-in tool recipient is not a function call: content",
                   "<|channel|>analysis to=browser.search code<|message|>{\"q\": \"x\"}<|call|>",
                   "<|channel|>analysis to=browser.search code<|message|>{\"q\": \"x\"}<|call|>", []),
    ToolParserCase("output cut inside a header", "Answer: <|channel|>comm", "Answer: <|channel|>comm", []),
]


def test_conformance(tokenizer):
    check_tool_parser(OpenAIToolParser, tokenizer, CASES)


@pytest.mark.parametrize("step", [1, 7, 10_000])
@pytest.mark.parametrize("recipient_in_role", [False, True])
def test_streamed_after_the_openai_gptoss_reasoning_parser(step, recipient_in_role):
    from heron_plugins.reasoning.openai_gptoss import GptOssReasoningParser

    weather = (f"{A} to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{{\"city\": \"Paris\"}}<|call|>"
               if recipient_in_role else f"{A}{WEATHER}")
    text = f"{THINK}{A}<|channel|>commentary<|message|>Checking.<|end|>{weather}"
    pipeline = ChoicePipeline(GptOssReasoningParser(None), OpenAIToolParser(None))
    for at in range(0, len(text), step):
        pipeline.feed(text[at:at + step])
    pipeline.finish()
    result = pipeline.result()
    assert (result.reasoning, result.content) == ("The user wants the weather.", "Checking.")
    assert [(c.function.name, c.function.arguments) for c in result.tool_calls] == [("get_weather", '{"city": "Paris"}')]
