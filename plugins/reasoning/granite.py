"""Granite 3.2: plain-text section headers instead of tags.

The model writes ``Here is my thought process:`` (or ``Here's my thought process:``), its
reasoning, then ``Here is my response:`` (or ``Here's …``) and the answer. The headers are dropped;
the text between them is kept verbatim. Granite's template thinks only when
``chat_template_kwargs.thinking`` is true.
"""

from __future__ import annotations

from heron_plugins.reasoning._base import TagReasoningParser

__all__ = ("GraniteReasoningParser",)


class GraniteReasoningParser(TagReasoningParser):
    """Reasoning between the "thought process" and "response" headers."""

    starts = ("Here is my thought process:", "Here's my thought process:")
    ends = ("Here is my response:", "Here's my response:")
    thinking_kwargs = ("thinking", "enable_thinking")
    thinking_default = False
