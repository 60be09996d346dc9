"""``pythonic``: the output is a Python list of calls, ``[get_weather(city="Paris"), f(x=1)]``.

Used by Llama 3.2, ToolACE and others. A list that starts the output (after whitespace) is read
with ``ast`` to the end of the output (so it settles at ``finish()``); keyword arguments must be
literals. Anything else, including a list followed by prose, stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall
from heron_plugins.tool_parsers._pythonic import pythonic_calls

__all__ = ("PythonicToolParser",)


class PythonicToolParser(BufferedToolParser):
    """Reads an output that is one Python list of calls."""

    anchored_markers = ("[",)
    keep_special_tokens = False  # no marker is a special token in this format

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        return pythonic_calls("[" + body)
