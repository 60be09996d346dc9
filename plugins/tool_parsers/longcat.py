"""``longcat``: ``<longcat_tool_call>{json}</longcat_tool_call>`` blocks (LongCat-Flash).

One ``{"name", "arguments"}`` object per block; text may come before and between blocks. An
unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("LongcatToolParser",)


class LongcatToolParser(JsonBlockToolParser):
    """Reads ``<longcat_tool_call>`` JSON blocks."""

    start_markers = ("<longcat_tool_call>",)
    end_markers = ("</longcat_tool_call>",)
