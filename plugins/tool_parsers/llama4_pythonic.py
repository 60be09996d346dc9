"""``llama4_pythonic``: a Python list of calls, optionally in ``<|python_start|>`` … ``<|python_end|>``.

Llama 4 writes the ``pythonic`` list either bare (the whole output, settled at ``finish()``) or
wrapped; a wrapped list may come after text, and a missing ``<|python_end|>`` (output cut after
the list) is tolerated.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd, ToEnd
from heron_plugins.tool_parsers._pythonic import pythonic_calls

__all__ = ("Llama4PythonicToolParser",)


class Llama4PythonicToolParser(BufferedToolParser):
    """Reads a (wrapped or bare) Python list of calls."""

    start_markers = ("<|python_start|>",)
    anchored_markers = ("[",)
    end_markers = ("<|python_end|>",)
    accept_unclosed = True

    def region_finder(self, marker: str) -> RegionEnd:
        return ToEnd() if marker == "[" else super().region_finder(marker)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        return pythonic_calls(("[" if marker == "[" else "") + body)
