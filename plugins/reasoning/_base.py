"""Shared machinery of the built-in reasoning parsers.

:class:`StreamingReasoningParser` turns one incremental ``_step(text, final)`` into the whole
contract: ``parse`` is a single step over the complete text with ``final=True``, so a parse and a
stream run the same code, and ``is_reasoning_end`` replays the token ids through a shadow parser
decoded incrementally (O(new tokens) per call, not O(output)).

:class:`TagReasoningParser` is the state machine for every ``START reasoning END answer`` format:

- thinking off (``thinking=False``): everything is content, verbatim;
- output that opens with a start marker (leading whitespace is dropped with it): reasoning up to
  the first end marker, content after it;
- no start marker: content, unless the template prefills the start marker
  (``implicit_start``): then everything up to the end marker is reasoning;
- no end marker (cut by ``max_tokens``): everything after the start is reasoning;
- ``content_starts`` markers end reasoning too but stay at the head of the content
  (GLM's ``<tool_call>``, which the tool parser must still see).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from heron.interfaces import ReasoningParser
from heron.protocol import DeltaMessage
from heron_plugins.reasoning._markers import AnswerUnwrapper, find_marker

__all__ = ("StreamingReasoningParser", "TagReasoningParser")

Pieces = tuple[list[str], list[str]]  # (reasoning pieces, content pieces)


class StreamingReasoningParser(ReasoningParser):
    """Base for parsers written as one incremental step function."""

    #: ``chat_template_kwargs`` keys that switch thinking, first present wins.
    thinking_kwargs: ClassVar[tuple[str, ...]] = ("enable_thinking", "thinking")
    #: Whether the model's template thinks when none of those keys is given.
    thinking_default: ClassVar[bool] = True
    #: False for formats that label reasoning whatever the prompt said (Harmony).
    honours_thinking: ClassVar[bool] = True

    @classmethod
    def thinking_from_kwargs(cls, chat_template_kwargs: Mapping[str, Any] | None) -> bool:
        """The ``thinking`` flag for a request rendered with these template kwargs."""
        kwargs = chat_template_kwargs or {}
        for key in cls.thinking_kwargs:
            if kwargs.get(key) is not None:
                return bool(kwargs[key])
        return cls.thinking_default

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        super().__init__(tokenizer, thinking=thinking)
        self._watcher: _EndWatcher | None = None

    @abstractmethod
    def _step(self, text: str, final: bool) -> Pieces:
        """Consume ``text``; return the reasoning and content that are now certain."""

    @abstractmethod
    def _reasoning_over(self) -> bool:
        """Whether the text consumed so far has left the reasoning part."""

    def parse(self, text: str) -> tuple[str | None, str | None]:
        reasoning, content = type(self)(self.tokenizer, thinking=self.thinking)._step(text, True)
        return "".join(reasoning) or None, "".join(content) or None

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        return _delta(*self._step(delta_text, False))

    def finish(self) -> DeltaMessage | None:
        return _delta(*self._step("", True))

    def is_reasoning_end(self, token_ids: Sequence[int]) -> bool:
        if not self.thinking and self.honours_thinking:
            return True
        if self._watcher is None:
            self._watcher = _EndWatcher(self)
        return self._watcher.ended(token_ids)


class TagReasoningParser(StreamingReasoningParser):
    """``<think>reasoning</think>answer`` and its relatives; subclasses set the markers."""

    starts: ClassVar[tuple[str, ...]] = ("<think>",)
    ends: ClassVar[tuple[str, ...]] = ("</think>",)
    content_starts: ClassVar[tuple[str, ...]] = ()
    implicit_start: ClassVar[bool] = False
    #: ``(open, close)`` tags wrapped around the answer, dropped from the content.
    answer_tags: ClassVar[tuple[str, str] | None] = None

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        super().__init__(tokenizer, thinking=thinking)
        self._state = "start" if thinking else "content"
        self._held = ""
        self._answer = AnswerUnwrapper(*self.answer_tags) if self.answer_tags else None
        self._end_ids: frozenset[int] | None = None
        self._all_end_tokens = False
        self._scanned: tuple[int, int | None] = (0, None)  # (ids scanned, last of them)
        self._token_end = False

    def _step(self, text: str, final: bool) -> Pieces:
        self._held += text
        reasoning: list[str] = []
        content: list[str] = []
        while self._state == "start":
            if not self._decide_start(final):
                return reasoning, content
        if self._state == "reasoning":
            at, marker = find_marker(self._held, self.ends + self.content_starts, final=final)
            reasoning.append(self._held[:at])
            if marker is None:
                self._held = self._held[at:]
                return reasoning, content
            self._state = "content"
            self._held = self._held[at + len(marker) :] if marker in self.ends else self._held[at:]
        text, self._held = self._held, ""
        content.append(self._answer.feed(text, final=final) if self._answer else text)
        return reasoning, content

    def _decide_start(self, final: bool) -> bool:
        """Leave the ``start`` state if the output's head is known; False to wait for more."""
        head = self._held.lstrip()
        if not final and (not head or any(len(s) > len(head) and s.startswith(head) for s in self.starts)):
            return False
        opened = max((s for s in self.starts if head.startswith(s)), key=len, default=None)
        if opened is not None:
            self._held, self._state = head[len(opened) :], "reasoning"
        else:
            self._state = "reasoning" if self.implicit_start else "content"
        return True

    def _reasoning_over(self) -> bool:
        return self._state == "content"

    def is_reasoning_end(self, token_ids: Sequence[int]) -> bool:
        if not self.thinking:
            return True
        end_ids, all_tokens = self._end_token_ids()
        if end_ids and self._end_token_seen(end_ids, token_ids):
            return True  # an end marker token settles it in every state
        if all_tokens and self.implicit_start:
            return False  # reasoning from the first token; only an end token closes it
        return super().is_reasoning_end(token_ids)

    def _end_token_seen(self, end_ids: frozenset[int], token_ids: Sequence[int]) -> bool:
        """Whether an end token occurs, scanning only ids not seen by the previous call."""
        start, last = self._scanned
        if len(token_ids) < start or (start and token_ids[start - 1] != last):
            start, self._token_end = 0, False  # not a continuation: rescan
        if token_ids:
            self._token_end = self._token_end or not end_ids.isdisjoint(token_ids[start:])
            self._scanned = (len(token_ids), token_ids[-1])
        return self._token_end

    def _end_token_ids(self) -> tuple[frozenset[int], bool]:
        """Ids of the end markers that are single tokens, and whether all of them are."""
        if self._end_ids is None:
            vocab = _vocab(self.tokenizer)
            markers = self.ends + self.content_starts
            self._end_ids = frozenset(vocab[m] for m in markers if m in vocab)
            self._all_end_tokens = all(m in vocab for m in markers)
        return self._end_ids, self._all_end_tokens


class _EndWatcher:
    """Feeds a growing list of token ids through a shadow parser, decoding only new tokens.

    Incremental detokenization: the text of the new ids is the decode of a window starting at
    the ids read by the previous call, minus the decode of that window's old part. This keeps
    the spaces a lone-token decode would drop, and waits while a multi-byte character is
    incomplete (the decode ends in U+FFFD).
    """

    def __init__(self, shadow: StreamingReasoningParser) -> None:
        self.shadow = shadow
        self._reset()

    def _reset(self) -> None:
        self.shadow = type(self.shadow)(self.shadow.tokenizer, thinking=True)
        self._prefix = 0  # window start
        self._read = 0  # ids already turned into text
        self._last: int | None = None

    def ended(self, ids: Sequence[int]) -> bool:
        if len(ids) < self._read or (self._read and ids[self._read - 1] != self._last):
            self._reset()  # not a continuation of the ids seen so far: start over
        if len(ids) > self._read and not self.shadow._reasoning_over():
            decode = self.shadow.tokenizer.decode
            old = decode(list(ids[self._prefix : self._read]), skip_special_tokens=False)
            new = decode(list(ids[self._prefix :]), skip_special_tokens=False)
            if not new.endswith("\ufffd"):
                self.shadow._step(new[len(old) :], False)
                self._prefix, self._read, self._last = self._read, len(ids), ids[-1]
        return self.shadow._reasoning_over()


def _vocab(tokenizer: Any) -> Mapping[str, int]:
    try:
        return tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return {}


def _delta(reasoning: list[str], content: list[str]) -> DeltaMessage | None:
    r, c = "".join(reasoning), "".join(content)
    return DeltaMessage(reasoning=r or None, content=c or None) if r or c else None
