"""ERNIE 4.5: ``<think>…</think>`` then the answer, optionally inside ``<response>…</response>``.

The response tags (and the whitespace around them) are dropped from the content. A tool call
written instead of a response (``<tool_call>…``) stays in the content for the tool parser.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("Ernie45ReasoningParser",)


class Ernie45ReasoningParser(TagReasoningParser):
    """``<think>…</think>``; content unwrapped from an optional ``<response>…</response>``."""

    answer_tags = ("<response>", "</response>")
