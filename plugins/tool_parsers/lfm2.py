"""``lfm2``: ``<|tool_call_start|>[pythonic list]<|tool_call_end|>`` (LiquidAI LFM2).

The list is read with ``ast`` (literal keyword arguments only). Text may come before and after;
an unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall
from heron_plugins.tool_parsers._pythonic import pythonic_calls

__all__ = ("Lfm2ToolParser",)


class Lfm2ToolParser(BufferedToolParser):
    """Reads ``<|tool_call_start|>`` … ``<|tool_call_end|>`` Python lists."""

    start_markers = ("<|tool_call_start|>",)
    end_markers = ("<|tool_call_end|>",)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        return pythonic_calls(body)
