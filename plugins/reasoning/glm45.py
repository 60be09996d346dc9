"""GLM-4.5 and later: ``<think>…</think>``, and a ``<tool_call>`` also ends reasoning.

When the model goes straight from thinking to a tool call without closing the block, the
``<tool_call>`` marker starts the content, so the tool parser that runs next still sees it.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("Glm45ReasoningParser",)


class Glm45ReasoningParser(TagReasoningParser):
    """``<think>…</think>``; ``<tool_call>`` ends reasoning and stays in content."""

    content_starts = ("<tool_call>",)
