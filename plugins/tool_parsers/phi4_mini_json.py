"""``phi4_mini_json``: ``functools[{json}, …]`` (Phi-4-mini).

``functools`` is followed by a JSON array of ``{"name", "arguments" | "parameters"}`` objects;
the region ends with the array. An array cut by the end of output stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("Phi4MiniJsonToolParser",)


class Phi4MiniJsonToolParser(JsonBlockToolParser):
    """Reads ``functools[…]`` JSON arrays."""

    start_markers = ("functools",)
    keep_special_tokens = False  # no marker is a special token in this format
    body_shape = "array"
    json_value_region = True
