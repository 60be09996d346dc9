"""``jamba``: ``<tool_calls>[{json}, …]</tool_calls>`` (AI21 Jamba).

The block holds a JSON array of ``{"name", "arguments"}`` objects; text may come before. An
unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("JambaToolParser",)


class JambaToolParser(JsonBlockToolParser):
    """Reads ``<tool_calls>`` JSON arrays."""

    start_markers = ("<tool_calls>",)
    end_markers = ("</tool_calls>",)
    body_shape = "array"
