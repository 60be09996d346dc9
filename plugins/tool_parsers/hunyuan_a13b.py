"""``hunyuan_a13b``: ``<tool_calls>[{json}, …]</tool_calls>`` (Hunyuan-A13B).

The reasoning parser handles ``<think>``/``<answer>``; the block holds a JSON array of
``{"name", "arguments"}`` objects. An unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("HunyuanA13BToolParser",)


class HunyuanA13BToolParser(JsonBlockToolParser):
    """Reads ``<tool_calls>`` JSON arrays."""

    start_markers = ("<tool_calls>",)
    end_markers = ("</tool_calls>",)
    body_shape = "array"
