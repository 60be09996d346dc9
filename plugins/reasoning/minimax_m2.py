"""MiniMax-M2: the template writes ``<think>``, the model only ``</think>``.

Everything before ``</think>`` is reasoning; without it (cut by ``max_tokens``) all of it is.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("MiniMaxM2ReasoningParser",)


class MiniMaxM2ReasoningParser(TagReasoningParser):
    """Reasoning until ``</think>``; an opening ``<think>`` is tolerated and dropped."""

    implicit_start = True
