"""Magistral: ``[THINK]…[/THINK]`` then the answer (special tokens in recent tokenizers)."""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("MistralReasoningParser",)


class MistralReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """``[THINK]…[/THINK]``; reasoning only when the output opens the block."""

    starts = ("[THINK]",)
    ends = ("[/THINK]",)
