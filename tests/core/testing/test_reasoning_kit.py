"""The reasoning-parser kit passes a correct parser and names the chunking that breaks a bad one."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import pytest

from heron.interfaces import ReasoningParser
from heron.protocol import DeltaMessage
from heron.testing.reasoning_parsers import (
    NoTokenizerWarning,
    ReasoningCase,
    check_reasoning_parser,
    chunkings,
    split_by_tokens,
)

# most checks here run without a tokenizer on purpose; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore::heron.testing.NoTokenizerWarning")

CASES = [
    ReasoningCase("split", "abc</think>def", "abc", "def"),
    ReasoningCase("unterminated", "abc", "abc", None, reasoning_ended=False),
    ReasoningCase("off", "x</think>y", None, "x</think>y", thinking=False),
]


class WordTokenizer:
    """A tiny stand-in for a HF fast tokenizer: one token per word or run of spaces."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def _tokens(self, text: str) -> list[re.Match[str]]:
        return list(re.finditer(r"\s+|\w+|[^\w\s]", text))

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab))

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False) -> dict:
        found = self._tokens(text)
        return {"input_ids": [self._id(m.group()) for m in found], "offset_mapping": [m.span() for m in found]}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self(text)["input_ids"]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        names = {v: k for k, v in self.vocab.items()}
        return "".join(names[i] for i in ids)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)


class GoodParser(ReasoningParser):
    """Reasoning until ``</think>``, holding back a tail that may start the marker."""

    END = "</think>"

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        super().__init__(tokenizer, thinking=thinking)
        self.done, self.held = not thinking, ""

    def parse(self, text: str) -> tuple[str | None, str | None]:
        if not self.thinking:
            return None, text
        reasoning, sep, content = text.partition(self.END)
        return reasoning, (content if sep else None)

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        if self.done:
            return DeltaMessage(content=delta_text) if delta_text else None
        buf = self.held + delta_text
        if self.END in buf:
            self.done, self.held = True, ""
            reasoning, _, content = buf.partition(self.END)
            return DeltaMessage(reasoning=reasoning, content=content)  # "" allowed: same as None
        keep = next((k for k in range(len(self.END) - 1, 0, -1) if buf.endswith(self.END[:k])), 0)
        self.held = buf[len(buf) - keep :]
        return DeltaMessage(reasoning=buf[: len(buf) - keep]) if len(buf) > keep else None

    def finish(self) -> DeltaMessage | None:
        held, self.held = self.held, ""
        return DeltaMessage(reasoning=held) if held else None


class PerDeltaParser(GoodParser):
    """Broken: looks for the end marker only inside each delta, never across two."""

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        if self.done:
            return DeltaMessage(content=delta_text)
        if self.END in delta_text:
            self.done = True
            reasoning, _, content = delta_text.partition(self.END)
            return DeltaMessage(reasoning=reasoning, content=content)
        return DeltaMessage(reasoning=delta_text)


class WrongParse(GoodParser):
    def parse(self, text: str) -> tuple[str | None, str | None]:
        return None, text


class Raises(GoodParser):
    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        if len(delta_text) == 1:
            raise RuntimeError("boom")
        return super().parse_delta(delta_text, delta_token_ids)


class ReturnsDict(GoodParser):
    def finish(self) -> Any:
        return {"reasoning": "x"}


class NeverEnds(GoodParser):
    def is_reasoning_end(self, token_ids: Sequence[int]) -> bool:
        return False


def fails(parser_cls: type, tokenizer: Any = None) -> str:
    with pytest.raises(AssertionError) as err:
        check_reasoning_parser(parser_cls, tokenizer, CASES)
    return str(err.value)


@pytest.mark.parametrize("tokenizer", [None, WordTokenizer()], ids=["no tokenizer", "tokenizer"])
def test_a_correct_parser_passes(tokenizer):
    check_reasoning_parser(GoodParser, tokenizer, CASES, random_splits=20)


def test_without_a_tokenizer_the_kit_says_what_it_did_not_check():
    with pytest.warns(NoTokenizerWarning, match=r"GoodParser .* one-token-at-a-time chunking and is_reasoning_end"):
        check_reasoning_parser(GoodParser, None, CASES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoTokenizerWarning)
        check_reasoning_parser(GoodParser, WordTokenizer(), CASES)  # no warning with one


def test_a_parser_blind_across_deltas_fails_naming_the_chunking():
    message = fails(PerDeltaParser)
    assert "PerDeltaParser failed" in message
    assert "[split] streamed one character at a time 14 pieces ['a', 'b', 'c', '<'" in message
    assert "reasoning differs: parse() gave 'abc', the deltas joined to 'abc</think>def'" in message
    assert "content differs" in message
    assert "whole text" not in message  # one piece is the one chunking it gets right


def test_token_chunking_is_reported():
    message = fails(PerDeltaParser, WordTokenizer())
    assert "[split] streamed one token at a time 6 pieces ['abc', '<', '/', 'think', '>', 'def']" in message


def test_a_wrong_parse_is_compared_with_the_expected_split():
    message = fails(WrongParse)
    assert "[split] parse(): reasoning differs: expected 'abc', parse() gave None" in message


def test_exceptions_and_wrong_types_are_reported_not_raised():
    assert "[split] streamed one character at a time" in fails(Raises)
    assert "RuntimeError('boom')" in fails(Raises)
    assert "finish() returned dict, not DeltaMessage | None" in fails(ReturnsDict)


def test_is_reasoning_end_is_checked_with_a_tokenizer():
    message = fails(NeverEnds, WordTokenizer())
    assert "[split] is_reasoning_end(all 6 token ids) is False, expected True" in message
    assert "[off] is_reasoning_end" in message
    assert "[unterminated]" not in message
    check_reasoning_parser(NeverEnds, None, CASES)  # nothing to check without token ids


def test_token_pieces_join_back_with_their_ids():
    tok = WordTokenizer()
    pieces = split_by_tokens(tok, "a <b>  c")
    assert [t for t, _ in pieces] == ["a", " ", "<", "b", ">", "  ", "c"]
    assert [tok.decode(ids) for _, ids in pieces] == [t for t, _ in pieces]


def test_chunkings_are_reproducible_and_join_back():
    first = list(chunkings("hello world", random_splits=3, seed=7))
    again = list(chunkings("hello world", random_splits=3, seed=7))
    assert [c.pieces for c in first] == [c.pieces for c in again]
    assert [c.name for c in first][0] == "one character at a time" and first[-1].name == "whole text"
    assert all("".join(t for t, _ in c.pieces) == "hello world" for c in first)
