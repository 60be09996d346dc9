"""Hunyuan-A13B: ``<think>…</think>`` then the answer inside ``<answer>…</answer>``.

The answer tags (and the newlines the model puts around them) are dropped from the content,
also when thinking is off, since the model still wraps its answer.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("HunyuanA13BReasoningParser",)


class HunyuanA13BReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """``<think>…</think>``; content unwrapped from ``<answer>…</answer>``."""

    answer_tags = ("<answer>", "</answer>")
