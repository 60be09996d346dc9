"""MiniMax-M2, reasoning kept inline: everything is content, with ``<think>`` put back in front.

MiniMax asks clients to send the whole ``<think>…</think>`` block back in later turns. The
template wrote the opening tag into the prompt, so this parser restores it at the head of the
content (unless the model wrote one itself). With thinking off, the output is passed unchanged.
Reasoning counts as ended once ``</think>`` has gone by.
"""

from __future__ import annotations

from typing import Any

from heron_plugins.reasoning._base import Pieces, StreamingReasoningParser

__all__ = ("MiniMaxM2AppendThinkReasoningParser",)

_OPEN, _CLOSE = "<think>", "</think>"


class MiniMaxM2AppendThinkReasoningParser(StreamingReasoningParser):
    """All output is content; ``<think>`` is prepended when thinking."""

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        super().__init__(tokenizer, thinking=thinking)
        self._head_done = not thinking
        self._held = ""
        self._tail = ""  # last characters seen, to find a ``</think>`` cut across chunks
        self._closed = False

    def _step(self, text: str, final: bool) -> Pieces:
        self._held += text
        out: list[str] = []
        if not self._head_done:
            if not final and _OPEN.startswith(self._held):
                return [], out  # the model may be writing the tag itself
            out.append("" if self._held.startswith(_OPEN) else _OPEN)
            self._head_done = True
        out.append(self._held)
        self._held = ""
        window = self._tail + "".join(out)
        self._closed = self._closed or _CLOSE in window
        self._tail = window[-(len(_CLOSE) - 1) :]
        return [], out

    def _reasoning_over(self) -> bool:
        return self._closed
