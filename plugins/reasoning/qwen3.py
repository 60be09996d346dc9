"""Qwen3 and QwQ: ``<think>…</think>`` then the answer.

With ``enable_thinking=false`` the template closes an empty think block in the prompt, so the
parser is built with ``thinking=False`` and everything is content. Output that does not open
with ``<think>`` is content. (Templates that prefill ``<think>``, such as Qwen3 *-Thinking-2507,
are better served by ``deepseek_r1``, which treats a missing opening tag as reasoning.)
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("Qwen3ReasoningParser",)


class Qwen3ReasoningParser(TagReasoningParser):
    """``<think>…</think>``; reasoning only when the output opens the block."""
