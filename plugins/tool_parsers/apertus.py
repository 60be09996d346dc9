"""``apertus``: ``<|tools_prefix|>[{"NAME": {args}}, …]<|tools_suffix|>`` (Apertus).

Each array element is an object with exactly one key, the function name, whose value is the
arguments object. Text may come before; an unterminated block stays content.
"""

from __future__ import annotations

import json

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall

__all__ = ("ApertusToolParser",)


class ApertusToolParser(BufferedToolParser):
    """Reads ``<|tools_prefix|>`` arrays of ``{name: arguments}`` objects."""

    start_markers = ("<|tools_prefix|>",)
    end_markers = ("<|tools_suffix|>",)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        value = json.loads(body)
        if not isinstance(value, list) or not all(isinstance(v, dict) and len(v) == 1 for v in value):
            return None
        return [ParsedCall(name, args) for item in value for name, args in item.items()]
