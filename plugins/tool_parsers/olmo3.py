"""``olmo3``: ``<function_calls>`` then one Python-style call per line, then ``</function_calls>``.

OLMo 3 writes ``name(key=value, …)`` lines (literals only, read with ``ast``). Text may come
before the block; an unterminated block stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall
from heron_plugins.tool_parsers._pythonic import pythonic_call

__all__ = ("Olmo3ToolParser",)


class Olmo3ToolParser(BufferedToolParser):
    """Reads ``<function_calls>`` blocks of one call per line."""

    start_markers = ("<function_calls>",)
    end_markers = ("</function_calls>",)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        calls = [pythonic_call(line) for line in body.splitlines() if line.strip()]
        if not calls or any(c is None for c in calls):
            return None
        return calls  # type: ignore[return-value]
