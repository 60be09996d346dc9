"""Command A reasoning: ``<|START_THINKING|>…<|END_THINKING|>`` then
``<|START_RESPONSE|>…<|END_RESPONSE|>``; the response markers are dropped from the content.

Tool calls (``<|START_ACTION|>…``) after the thinking stay in the content for the tool parser.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("CohereCommand3ReasoningParser",)


class CohereCommand3ReasoningParser(KeepsSpecialTokens, TagReasoningParser):
    """Thinking markers around reasoning, response markers around the answer."""

    starts = ("<|START_THINKING|>",)
    ends = ("<|END_THINKING|>",)
    answer_tags = ("<|START_RESPONSE|>", "<|END_RESPONSE|>")
