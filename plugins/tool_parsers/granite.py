"""``granite``: ``<|tool_call|>`` (Granite 3.0) or ``<tool_call>`` (3.1), then a JSON array.

There is no closing tag: the region ends where the JSON array ends (text after it is content).
An array cut by the end of output stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("GraniteToolParser",)


class GraniteToolParser(JsonBlockToolParser):
    """Reads a JSON array of calls after the tool-call tag."""

    start_markers = ("<|tool_call|>", "<tool_call>")
    body_shape = "any"
    json_value_region = True
