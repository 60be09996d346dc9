"""A base for formats whose call regions hold JSON: one call object or an array of them.

Subclasses set the markers (see :mod:`._base`) and ``body_shape``: ``"object"`` (one
``{"name", "arguments" | "parameters"}`` object), ``"array"`` (a list of them) or ``"any"``.
``json_value_region = True`` ends a region where its JSON value ends (for formats with no
closing marker); whitespace around the value is allowed, anything else fails the region.
"""

from __future__ import annotations

import json
from typing import ClassVar

from heron_plugins.tool_parsers._base import BufferedToolParser, JsonValueEnd, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._calls import json_calls

__all__ = ("JsonBlockToolParser",)


class JsonBlockToolParser(BufferedToolParser):
    """Regions whose body is a JSON call object or array of call objects."""

    body_shape: ClassVar[str] = "object"
    json_value_region: ClassVar[bool] = False

    def region_finder(self, marker: str) -> RegionEnd:
        return JsonValueEnd() if self.json_value_region else super().region_finder(marker)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        value = json.loads(body)
        if self.body_shape == "object" and not isinstance(value, dict):
            return None
        if self.body_shape == "array" and not isinstance(value, list):
            return None
        return json_calls(value)
