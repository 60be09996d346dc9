"""Kimi K2: ``<think>…</think>`` then the answer (and possibly a tool-call section)."""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("KimiK2ReasoningParser",)


class KimiK2ReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """``<think>…</think>``; reasoning only when the output opens the block."""
