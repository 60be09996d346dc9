"""Kimi K2: ``<think>…</think>`` then the answer (and possibly a tool-call section)."""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("KimiK2ReasoningParser",)


class KimiK2ReasoningParser(TagReasoningParser):
    """``<think>…</think>``; reasoning only when the output opens the block."""
