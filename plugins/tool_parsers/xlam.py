"""``xlam``: a JSON array of ``{"name", "arguments"}`` objects, in any of the places xLAM puts it.

Salesforce xLAM writes the array bare (as the whole output, starting it), in a ```` ```json ````
fence (```` ``` ```` closes it), after ``</think>``, after ``[TOOL_CALLS]``, or inside
``<tool_call>`` … ``</tool_call>``. Bare, after ``</think>`` and after ``[TOOL_CALLS]`` the region
ends with the array, so text may follow; a single call object is accepted too except bare. A
region that does not hold calls stays content (its marker included).
"""

from __future__ import annotations

import json

from heron_plugins.tool_parsers._base import (
    BufferedToolParser,
    JsonValueEnd,
    ParsedCall,
    RegionEnd,
    UntilMarker,
)
from heron_plugins.tool_parsers._calls import json_calls

__all__ = ("XlamToolParser",)

_CLOSERS = {"```json": "```", "<tool_call>": "</tool_call>"}


class XlamToolParser(BufferedToolParser):
    """Reads xLAM's JSON call arrays, bare, fenced or tagged."""

    start_markers = ("```json", "</think>", "[TOOL_CALLS]", "<tool_call>")
    anchored_markers = ("[",)

    def region_finder(self, marker: str) -> RegionEnd:
        if marker in _CLOSERS:
            return UntilMarker(_CLOSERS[marker])
        return JsonValueEnd(opened=marker == "[")

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        value = json.loads("[" + body if marker == "[" else body)
        return json_calls(value) if isinstance(value, list | dict) else None
