"""The ReasoningParser contract: split model output into reasoning and answer content."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from heron.protocol import DeltaMessage

__all__ = ("ReasoningParser",)


class ReasoningParser(ABC):
    """Separates reasoning from content for one request; built once per request.

    The chat pipeline runs it before the tool parser and gives that only the content.
    Like tool parsers, the deltas must join to exactly what ``parse`` returns.
    """

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        """Args:
        tokenizer: the request's HF tokenizer.
        thinking: False when the rendered prompt turned thinking off or already closed the
            think block; the parser then treats all output as content (unless its format
            says otherwise).
        """
        self.tokenizer = tokenizer
        self.thinking = thinking

    @abstractmethod
    def parse(self, text: str) -> tuple[str | None, str | None]:
        """Split a complete output into ``(reasoning, content)``; either may be None."""

    @abstractmethod
    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        """Take the next piece of output; return ``reasoning``/``content`` that may be sent now."""

    @abstractmethod
    def finish(self) -> DeltaMessage | None:
        """End of output: flush held-back text."""

    def is_reasoning_end(self, token_ids: Sequence[int]) -> bool:
        """Whether reasoning has ended within ``token_ids`` (the output so far).

        Used to start structured-output constraints once reasoning is over: the engine gives
        each sequence its own parser and calls this after every token with the growing output,
        so it must cost O(new tokens) per call. The default keeps per-instance state: it decodes
        only the ids added since the previous call (incrementally, so merges and multi-byte
        characters stay right) and feeds that text to a private parser of the same class through
        :meth:`parse_delta`; reasoning has ended once that parser hands out content (``""``
        counts: the end marker was seen). Called once with all ids it gives the same answer;
        ids that do not continue the previous call's start over. Formats with an end token may
        override it (a set lookup over the new ids).
        """
        if not self.thinking:
            return True
        tracker = self.__dict__.get("_reasoning_end_tracker")
        if tracker is None:
            tracker = self.__dict__["_reasoning_end_tracker"] = _EndTracker(type(self), self.tokenizer)
        return tracker.ended(token_ids)

    def adjust_request(self, request: Any) -> Any:
        """Return the chat request, changed if the format needs it; the default changes nothing.

        Called on a throwaway instance before sampling parameters are built (the reasoning
        parser first, then the tool parser). A format whose markers are special tokens in its
        model family sets ``request.skip_special_tokens = False`` so that the detokenizer keeps
        them; the server still hides the special tokens no parser consumed from the answer.
        """
        return request


class _EndTracker:
    """Feeds a growing list of output ids, decoded incrementally, through a shadow parser."""

    __slots__ = ("cls", "tokenizer", "shadow", "prefix", "read", "last", "ended_at")

    def __init__(self, cls: type[ReasoningParser], tokenizer: Any) -> None:
        self.cls, self.tokenizer = cls, tokenizer
        self.reset()

    def reset(self) -> None:
        self.shadow = self.cls(self.tokenizer, thinking=True)
        self.prefix = 0  # start of the decode window (context for merges)
        self.read = 0  # ids already turned into text
        self.last: int | None = None
        self.ended_at: int | None = None  # how many ids the first "ended" answer had seen

    def ended(self, ids: Sequence[int]) -> bool:
        if len(ids) < self.read or (self.read and ids[self.read - 1] != self.last):
            self.reset()  # not a continuation of the ids seen so far
        if self.ended_at is not None or len(ids) <= self.read:
            return self.ended_at is not None
        old = self.tokenizer.decode(list(ids[self.prefix : self.read]), skip_special_tokens=False)
        new = self.tokenizer.decode(list(ids[self.prefix :]), skip_special_tokens=False)
        if new.endswith("\ufffd"):  # an incomplete character: wait for the next id
            return False
        delta = self.shadow.parse_delta(new[len(old) :], tuple(ids[self.read :]))
        self.prefix, self.read, self.last = self.read, len(ids), ids[-1]
        if delta is not None and delta.content is not None:
            self.ended_at = self.read
        return self.ended_at is not None
