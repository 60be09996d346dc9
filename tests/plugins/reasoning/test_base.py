"""The shared machinery: marker scanning, answer unwrapping, thinking kwargs, is_reasoning_end."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from heron_plugins.reasoning._markers import AnswerUnwrapper, find_marker
from heron_plugins.reasoning.deepseek_r1 import DeepSeekR1ReasoningParser
from heron_plugins.reasoning.glm45 import Glm45ReasoningParser
from heron_plugins.reasoning.openai_gptoss import GptOssReasoningParser
from heron_plugins.reasoning.qwen3 import Qwen3ReasoningParser


@pytest.mark.parametrize(
    ("buf", "final", "expected"),
    [
        ("abc", False, (3, None)),
        ("ab</thi", False, (2, None)),  # held: may become </think>
        ("ab</thi", True, (7, None)),  # end of output: nothing can grow
        ("ab</think>cd", False, (2, "</think>")),
        ("a<tool_call>b</think>", False, (1, "<tool_call>")),  # the earliest marker wins
        ("x<", False, (1, None)),
    ],
)
def test_find_marker(buf, final, expected):
    assert find_marker(buf, ("</think>", "<tool_call>"), final=final) == expected


def test_find_marker_prefers_the_longest_and_waits_for_it():
    markers = ("<|channel>thought", "<|channel>thought\n")
    assert find_marker("<|channel>thought", markers, final=False) == (0, None)
    assert find_marker("<|channel>thought", markers, final=True) == (0, "<|channel>thought")
    assert find_marker("<|channel>thought\nx", markers, final=False) == (0, "<|channel>thought\n")


def unwrap(pieces: Sequence[str]) -> str:
    u = AnswerUnwrapper("<answer>", "</answer>")
    return "".join(u.feed(p) for p in pieces) + u.feed("", final=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n<answer>\n Hi there \n</answer>\n", "Hi there"),
        ("no tags", "no tags"),
        ("  <ans", "  <ans"),
        ("<answer>cut", "cut"),
        ("<answer>a</answer> tail", "a tail"),
        ("", ""),
    ],
)
def test_answer_unwrapper_is_chunking_independent(text, expected):
    assert unwrap([text]) == expected
    assert unwrap(list(text)) == expected


class VocabTokenizer:
    """Knows its vocabulary but refuses to decode: only the token-id fast path may be used."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        raise AssertionError("decoded although the end marker is a single token")


def test_single_token_end_marker_needs_no_decoding():
    tok = VocabTokenizer({"</think>": 7, "a": 1})
    parser = DeepSeekR1ReasoningParser(tok)
    assert parser.is_reasoning_end([1, 1, 7, 1])
    assert not parser.is_reasoning_end([1, 1, 1])
    assert DeepSeekR1ReasoningParser(tok, thinking=False).is_reasoning_end([])


def test_every_end_marker_must_be_a_token_for_the_fast_path():
    tok = VocabTokenizer({"</think>": 7})  # <tool_call> is not a token: text path
    with pytest.raises(AssertionError, match="decoded"):
        Glm45ReasoningParser(tok).is_reasoning_end([1])
    assert Glm45ReasoningParser(tok).is_reasoning_end([1, 7])  # an end token still settles it


class CharTokenizer:
    """One token per character (code point as id), counting decoded tokens."""

    def __init__(self) -> None:
        self.decoded = 0

    def get_vocab(self) -> dict[str, int]:
        return {}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        self.decoded += len(ids)
        return "".join(map(chr, ids))


def test_is_reasoning_end_decodes_only_new_tokens():
    tok = CharTokenizer()
    parser = Qwen3ReasoningParser(tok)
    text = "<think>" + "x" * 500 + "</think>answer"
    ids = [ord(c) for c in text]
    results = [parser.is_reasoning_end(ids[:n]) for n in range(1, len(ids) + 1)]
    assert results.index(True) == len("<think>" + "x" * 500 + "</think>") - 1
    assert all(results[results.index(True) :])
    assert tok.decoded < 4 * len(ids)  # incremental, not quadratic
    assert not parser.is_reasoning_end([ord(c) for c in "<think>other"])  # a new stream starts over


def test_no_opening_tag_means_reasoning_never_started_for_qwen3():
    tok = CharTokenizer()
    assert Qwen3ReasoningParser(tok).is_reasoning_end([ord(c) for c in "Hello"])
    assert not DeepSeekR1ReasoningParser(tok).is_reasoning_end([ord(c) for c in "Hello"])


def test_harmony_ignores_the_thinking_flag_for_is_reasoning_end():
    tok = CharTokenizer()
    ids = [ord(c) for c in "<|channel|>analysis<|message|>hmm"]
    assert not GptOssReasoningParser(tok, thinking=False).is_reasoning_end(ids)
