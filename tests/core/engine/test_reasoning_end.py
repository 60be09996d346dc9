"""The default ``ReasoningParser.is_reasoning_end`` is incremental: O(new ids) per call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from heron.interfaces import ReasoningParser
from heron.protocol import DeltaMessage


class CountingTokenizer:
    """One character per id; counts the ids it decodes."""

    def __init__(self) -> None:
        self.decoded = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        self.decoded += len(ids)
        return "".join(map(chr, ids))


class ThinkParser(ReasoningParser):
    """Reasoning up to ``</think>``; keeps the default ``is_reasoning_end``."""

    END = "</think>"

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        super().__init__(tokenizer, thinking=thinking)
        self.done, self.held = not thinking, ""

    def parse(self, text: str) -> tuple[str | None, str | None]:
        reasoning, sep, content = text.partition(self.END)
        return reasoning or None, content if sep else None

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        if self.done:
            return DeltaMessage(content=delta_text)
        buf = self.held + delta_text
        if self.END in buf:
            self.done, self.held = True, ""
            reasoning, _, content = buf.partition(self.END)
            return DeltaMessage(reasoning=reasoning or None, content=content)
        keep = next((k for k in range(len(self.END) - 1, 0, -1) if buf.endswith(self.END[:k])), 0)
        self.held = buf[len(buf) - keep :]
        return DeltaMessage(reasoning=buf[: len(buf) - keep]) if len(buf) > keep else None

    def finish(self) -> DeltaMessage | None:
        return None


def test_growing_prefixes_decode_only_the_new_ids():
    tok = CountingTokenizer()
    ids = tok.encode("x" * 3000 + "</think>answer")
    parser = ThinkParser(tok)
    answers = [parser.is_reasoning_end(ids[:n]) for n in range(1, len(ids) + 1)]
    end = len("x" * 3000 + "</think>")
    assert answers == [False] * (end - 1) + [True] * (len(ids) - end + 1)
    assert tok.decoded <= 3 * len(ids)  # a re-decode of the whole prefix per call would be ~n^2/2


def test_one_call_with_all_ids_agrees_and_a_new_stream_starts_over():
    tok = CountingTokenizer()
    parser = ThinkParser(tok)
    assert parser.is_reasoning_end(tok.encode("abc</think>"))
    assert not parser.is_reasoning_end(tok.encode("other thoughts"))  # not a continuation: start over
    assert not ThinkParser(tok).is_reasoning_end(tok.encode("abc</thi"))
    assert ThinkParser(tok, thinking=False).is_reasoning_end([])


def test_the_view_the_engine_passes_behaves_like_a_list():
    from heron.engine.request import OutputIds

    ids = [9, 9, 1, 2, 3, 4]
    view = OutputIds(ids, 2)
    assert len(view) == 4 and list(view) == [1, 2, 3, 4] and view[-1] == 4 and view[1:3] == [2, 3]
    assert view[::2] == [1, 3] and view[5:] == [] and view[:] == [1, 2, 3, 4]
    ids.append(5)  # a view, not a copy
    assert len(view) == 5 and view[4] == 5
    tok = CountingTokenizer()
    assert ThinkParser(tok).is_reasoning_end(OutputIds([0, *tok.encode("a</think>")], 1))
