"""Gemma 4: a thought channel ``<|channel>thought\n…<channel|>`` before the answer.

The channel header with its newline is dropped; the answer after ``<channel|>`` is content.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("Gemma4ReasoningParser",)


class Gemma4ReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """Reasoning in the ``thought`` channel; reasoning only when the output opens it."""

    starts = ("<|channel>thought\n", "<|channel>thought")
    ends = ("<channel|>",)
