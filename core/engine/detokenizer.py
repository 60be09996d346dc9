"""Incremental detokenization and stop strings, per sample.

Tokens are decoded in a short sliding window (``prefix_offset:read_offset`` is the context that
keeps merges such as leading spaces right; ``read_offset:`` is new), so each step costs a couple
of small ``decode`` calls, not a decode of the whole output. Text that ends in an incomplete
UTF-8 sequence is held until the next token completes it. Text that could still turn into a stop
string is held back so that emitted text never has to be taken back.

Only text not yet handed out is kept (:meth:`IncrementalDetokenizer.take` hands it out): a stop
string can only start inside held-back text, so the search never needs what was handed out, and
no step copies the whole output.
"""

from __future__ import annotations

from typing import Any

__all__ = ("IncrementalDetokenizer",)

_INITIAL_WINDOW = 5  # context tokens of the prompt that seed the first output merges


class IncrementalDetokenizer:
    """Turns one sample's token ids into text, finding stop strings as it goes."""

    __slots__ = ("tokenizer", "skip_special", "spaces_between", "stop", "include_stop", "max_stop",
                 "tokens", "prefix_offset", "read_offset", "text", "num_taken", "stopped_at")

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
        self.text = ""  # decoded text not handed out yet
        self.num_taken = 0  # characters handed out by take()
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

    def take(self, finished: bool) -> str:
        """Hand out the new text safe to show: all of it when finished, else without a possible
        stop-string prefix at the end (that part stays for the next call)."""
        text = self.text
        hold = 0
        if not finished and self.stop and self.stopped_at is None:
            for s in self.stop:
                for k in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        hold = max(hold, k)
                        break
        out, self.text = (text[: len(text) - hold], text[len(text) - hold :]) if hold else (text, "")
        self.num_taken += len(out)
        return out
