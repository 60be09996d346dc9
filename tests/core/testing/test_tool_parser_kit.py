"""The tool-parser kit passes a correct parser and names the chunking that breaks a bad one."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from typing import Any

import pytest

from heron.interfaces import ToolParser
from heron.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    ToolParseResult,
)
from heron.testing import NoTokenizerWarning
from heron.testing.tool_parsers import ToolParserCase, check_tool_parser, invariant_errors

# most checks here run without a tokenizer on purpose; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore::heron.testing.NoTokenizerWarning")

MARK = "\nCALL "
CASES = [
    ToolParserCase("plain", "just text", "just text", []),
    ToolParserCase("call", 'Hi!\nCALL f {"a": [1, "ü"]}\nCALL g {}', "Hi!", [("f", {"a": [1, "ü"]}), ("g", {})]),
]


class WordTokenizer:
    """A stand-in for a HF fast tokenizer: one token per word, space run or symbol."""

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False) -> dict:
        found = list(re.finditer(r"\s+|\w+|[^\w\s]", text))
        return {"input_ids": list(range(len(found))), "offset_mapping": [m.span() for m in found]}


class GoodParser(ToolParser):
    """``content`` then ``\\nCALL name {json}`` lines; streams content up to a possible marker."""

    def __init__(self, tokenizer: Any, tools: list[dict] | None = None) -> None:
        super().__init__(tokenizer, tools)
        self.buf, self.sent, self.ids = "", 0, {}

    def _id(self, index: int) -> str:
        return self.ids.setdefault(index, f"call-{index}-{id(self)}")

    def _calls(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        content, *lines = text.split(MARK)
        calls = []
        for line in lines:
            name, _, args = line.partition(" ")
            calls.append((name, json.dumps(json.loads(args))))
        return content, calls

    def parse(self, text: str) -> ToolParseResult:
        content, calls = self._calls(text)
        return ToolParseResult(content=content or None, tool_calls=[
            ToolCall(id=self._id(i), function=FunctionCall(name=n, arguments=a)) for i, (n, a) in enumerate(calls)])

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        self.buf += delta_text
        if MARK in self.buf:
            return None  # calls go out at the end
        keep = next((k for k in range(len(MARK), 0, -1) if self.buf.endswith(MARK[:k])), 0)
        out = self.buf[: len(self.buf) - keep]
        self.sent += len(out)
        self.buf = self.buf[len(out):]
        return DeltaMessage(content=out) if out else None

    def finish(self) -> DeltaMessage | None:
        content, calls = self._calls(self.buf)
        return DeltaMessage(content=content or None, tool_calls=[
            self._delta(i, n, a) for i, (n, a) in enumerate(calls)])

    def _delta(self, i: int, name: str, args: str) -> DeltaToolCall:
        return DeltaToolCall(index=i, id=self._id(i), type="function", function=DeltaFunctionCall(name=name, arguments=args))


class DropsLastChar(GoodParser):
    """Broken: one-character deltas are sent one delta late, and the last one is forgotten."""

    last = ""

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        if len(delta_text) != 1:
            return super().parse_delta(delta_text, delta_token_ids)
        previous, self.last = self.last, delta_text
        return super().parse_delta(previous) if previous else None


class ResendsName(GoodParser):
    """Broken: splits the arguments over two deltas and sends the name with both."""

    def finish(self) -> DeltaMessage | None:
        delta = super().finish()
        split = []
        for tc in delta.tool_calls if delta else []:
            args = tc.function.arguments
            split += [tc, DeltaToolCall(index=tc.index, function=DeltaFunctionCall(name=tc.function.name))]
            tc.function.arguments, split[-1].function.arguments = args[:1], args[1:]
        return DeltaMessage(content=delta.content, tool_calls=split) if delta else None


class ForgetsIds(GoodParser):
    """Broken: a new id every time, so parse() and the stream disagree."""

    def _id(self, index: int) -> str:
        self.counter = getattr(self, "counter", 0) + 1
        return f"id{self.counter}"


class WrongParse(GoodParser):
    def parse(self, text: str) -> ToolParseResult:
        return ToolParseResult(content=text)


def fails(parser_cls: type, tokenizer: Any = None, cases: list[ToolParserCase] = CASES) -> str:
    with pytest.raises(AssertionError) as err:
        check_tool_parser(parser_cls, tokenizer, cases)
    return str(err.value)


@pytest.mark.parametrize("tokenizer", [None, WordTokenizer()], ids=["no tokenizer", "tokenizer"])
def test_a_correct_parser_passes(tokenizer):
    check_tool_parser(GoodParser, tokenizer, CASES, random_splits=20)


def test_without_a_tokenizer_the_kit_says_what_it_did_not_check():
    with pytest.warns(NoTokenizerWarning, match=r"GoodParser .* one-token-at-a-time chunking went unchecked"):
        check_tool_parser(GoodParser, None, CASES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoTokenizerWarning)
        check_tool_parser(GoodParser, WordTokenizer(), CASES)  # no warning with one


def test_a_lost_character_names_the_chunking_and_the_difference():
    message = fails(DropsLastChar)
    assert "DropsLastChar failed" in message
    assert "[plain] one character at a time: 9 pieces ['j', 'u', 's', 't', ' '" in message
    assert "content joins to 'just tex', parse() gave 'just text'" in message
    assert "whole text" not in message


def test_token_chunking_is_shown_with_its_pieces():
    message = fails(DropsLastChar, WordTokenizer(), [ToolParserCase("one letter", "ab c", "ab c", [])])
    assert "[one letter] one token at a time: 3 pieces ['ab', ' ', 'c']: content joins to 'ab '" in message


def test_a_resent_name_is_reported():
    message = fails(ResendsName)
    assert "[call] whole text: 1 pieces ['Hi!\\nCALL f" in message
    assert "call 0 sends function.name='f' again after its first delta" in message
    assert "[plain]" not in message


def test_ids_must_match_parse_on_the_same_parser():
    message = fails(ForgetsIds)
    assert "call 0 streamed id" in message and "parse() on the same parser gave" in message


def test_parse_is_checked_against_the_expectation_first():
    message = fails(WrongParse)
    assert "[call] parse(): content is 'Hi!\\nCALL f" in message
    assert "calls are [], expected [('f', {'a': [1, 'ü']}), ('g', {})]" in message


def test_invariant_errors_checks_a_stream():
    first = DeltaToolCall(index=0, id="a", type="function", function=DeltaFunctionCall(name="f", arguments='{"x"'))
    good = [DeltaMessage(content="hi"), None, DeltaMessage(tool_calls=[first]),
            DeltaMessage(tool_calls=[DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=": 1}"))])]
    assert invariant_errors(good) == []
    bad = [DeltaMessage(tool_calls=[DeltaToolCall(index=1, id="a", type="function",
                                                  function=DeltaFunctionCall(name="f", arguments="{}"))]),
           DeltaMessage(tool_calls=[DeltaToolCall(index=0, id="", function=DeltaFunctionCall(name="g", arguments="[]"))]),
           "text"]
    errors = invariant_errors(bad)
    assert "delta #0: call index 1 appears, expected 0 next (indexes start at 0 and rise by one)" in errors
    assert "delta #1: the first delta of call 0 has no id" in errors
    assert "delta #1: the first delta of call 0 has type None, not 'function'" in errors
    assert "delta #2 is a str, not DeltaMessage | None" in errors
    assert "the arguments of call 0 join to '[]', not a JSON object" in errors
    unfinished = invariant_errors([DeltaMessage(tool_calls=[first])])
    assert unfinished == ["the arguments of call 0 join to '{\"x\"', not valid JSON"]


def test_nan_arguments_are_not_valid_json():
    call = DeltaToolCall(index=0, id="a", type="function", function=DeltaFunctionCall(name="f", arguments='{"x": NaN}'))
    assert invariant_errors([DeltaMessage(tool_calls=[call])]) == [
        "the arguments of call 0 join to '{\"x\": NaN}', not valid JSON"]
