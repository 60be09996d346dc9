"""DeepSeek-R1 and its distills: ``<think>…</think>`` then the answer.

The R1 chat template ends the prompt with ``<think>\n``, so the model usually writes only the
closing tag: output starts as reasoning whether or not the opening tag appears.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("DeepSeekR1ReasoningParser",)


class DeepSeekR1ReasoningParser(TagReasoningParser):
    """Reasoning until ``</think>``; the opening ``<think>`` is optional (prefilled)."""

    implicit_start = True
