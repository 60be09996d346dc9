"""Seed-OSS: ``<seed:think>…</seed:think>`` then the answer."""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("SeedOssReasoningParser",)


class SeedOssReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """``<seed:think>…</seed:think>``; reasoning only when the output opens the block."""

    starts = ("<seed:think>",)
    ends = ("</seed:think>",)
