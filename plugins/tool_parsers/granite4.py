"""``granite4``: ``<tool_call>{json}</tool_call>`` blocks (Granite 4).

One ``{"name", "arguments"}`` object per block; text may come before and between blocks. An
unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("Granite4ToolParser",)


class Granite4ToolParser(JsonBlockToolParser):
    """Reads ``<tool_call>`` JSON blocks."""

    start_markers = ("<tool_call>",)
    end_markers = ("</tool_call>",)
