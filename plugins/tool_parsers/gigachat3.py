"""``gigachat3``: ``function call<|role_sep|>`` then one JSON call object (GigaChat 3).

The object is ``{"name", "arguments"}``; the region ends with it. Text may come before; an
object cut by the end of output stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("Gigachat3ToolParser",)


class Gigachat3ToolParser(JsonBlockToolParser):
    """Reads the ``function call`` role block."""

    start_markers = ("function call<|role_sep|>",)
    json_value_region = True
