"""OLMo 3: ``<think>…</think>`` written as ordinary text, not special tokens.

Detection works on text, so nothing differs from the tag format except that
``is_reasoning_end`` can never take the single-token fast path.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("Olmo3ReasoningParser",)


class Olmo3ReasoningParser(TagReasoningParser):
    """``<think>…</think>``; reasoning only when the output opens the block."""
