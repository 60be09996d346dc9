"""Incremental detokenization and stop strings, per sample.

Tokens are decoded in a short sliding window (``prefix_offset:read_offset`` is the context that
keeps merges such as leading spaces right; ``read_offset:`` is new), so each step costs a couple
of small ``decode`` calls, not a decode of the whole output. Text that ends in an incomplete
UTF-8 sequence is held until the next token completes it. Text that could still turn into a stop
string is held back so that emitted text never has to be taken back.
"""

from __future__ import annotations

from typing import Any

__all__ = ("IncrementalDetokenizer",)

_INITIAL_WINDOW = 5  # context tokens of the prompt that seed the first output merges


class IncrementalDetokenizer:
    """Turns one sample's token ids into text, finding stop strings as it goes."""

    __slots__ = ("tokenizer", "skip_special", "spaces_between", "stop", "include_stop", "max_stop",
                 "tokens", "prefix_offset", "read_offset", "text", "stopped_at", "_special")

    def __init__(self, tokenizer: Any, prompt_ids: list[int], *, skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True, stop: list[str] | None = None,
                 include_stop_str_in_output: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special_tokens
        self.spaces_between = spaces_between_special_tokens
        self.stop = list(stop or [])
        self.include_stop = include_stop_str_in_output
        self.max_stop = max((len(s) for s in self.stop), default=0)
        context = list(prompt_ids[-_INITIAL_WINDOW:])
        if self.skip_special:
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            context = [t for t in context if t not in special]
        self.tokens = context
        self.prefix_offset = 0
        self.read_offset = len(context)
        self.text = ""
        self.stopped_at: str | None = None  # the stop string found, if any

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special,
                                     spaces_between_special_tokens=self.spaces_between) if ids else ""

    def add(self, token_id: int) -> str | None:
        """Append one token; returns the stop string if the text now contains one (text cut there)."""
        self.tokens.append(token_id)
        prefix = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix):] if full.startswith(prefix) else full[len(prefix):]
            before = len(self.text)
            self.text += new
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            if self.stop:
                return self._find_stop(before)
        return None

    def _find_stop(self, before: int) -> str | None:
        start = max(0, before - self.max_stop + 1)
        best: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, start)
            if at != -1 and (best is None or at < best[0]):
                best = (at, s)
        if best is None:
            return None
        at, s = best
        self.text = self.text[: at + len(s)] if self.include_stop else self.text[:at]
        self.stopped_at = s
        return s

    def visible(self, finished: bool) -> str:
        """The text safe to show: all of it when finished, else without a possible stop prefix."""
        if finished or not self.stop or self.stopped_at is not None:
            return self.text
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return self.text[: len(self.text) - hold] if hold else self.text
