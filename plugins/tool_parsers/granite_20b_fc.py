"""``granite-20b-fc``: ``<function_call> {json}`` repeated (granite-20b-functioncalling).

Each marker is followed by one ``{"name", "arguments"}`` object; the region ends with the
object. Text may come before; an object cut by the end of output stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("Granite20bFcToolParser",)


class Granite20bFcToolParser(JsonBlockToolParser):
    """Reads ``<function_call>`` JSON objects."""

    start_markers = ("<function_call>",)
    json_value_region = True
