"""Step-3: everything before ``</think>`` is reasoning (the template opened the block)."""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("Step3ReasoningParser",)


class Step3ReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """Reasoning until ``</think>``; an opening ``<think>`` is tolerated and dropped."""

    implicit_start = True
