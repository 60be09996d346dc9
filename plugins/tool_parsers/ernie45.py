"""``ernie45``: ``<tool_call>{json}</tool_call>`` blocks after the reasoning (ERNIE 4.5).

The reasoning parser removes ``<think>…</think>`` first; this reads one ``{"name",
"arguments"}`` object per block. An unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("Ernie45ToolParser",)


class Ernie45ToolParser(JsonBlockToolParser):
    """Reads ``<tool_call>`` JSON blocks."""

    start_markers = ("<tool_call>",)
    end_markers = ("</tool_call>",)
