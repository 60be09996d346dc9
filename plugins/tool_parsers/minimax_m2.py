"""``minimax_m2``: MiniMax-M2 tool calls, ``<invoke>`` elements in a ``<minimax:tool_call>`` block.

The model writes ``<minimax:tool_call>``, one or more
``<invoke name="f"><parameter name="k">v</parameter>…</invoke>`` elements, and
``</minimax:tool_call>``; text may come before and between blocks. Values (less one newline on
each side) are converted with the tool's JSON schema; strings, and parameters the schema does not
describe, stay strings. A block's calls stream when the block closes. A block cut by the end of
output is still read when its last ``</invoke>`` was written; otherwise the whole block, like
anything malformed, stays content verbatim.
"""

from __future__ import annotations

import re

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._xml_common import ToolSchemas, Until, read_invokes

__all__ = ("MiniMaxM2ToolParser",)

START, END = "<minimax:tool_call>", "</minimax:tool_call>"
_INVOKE = (re.compile(r"<invoke(\s[^>]*)>"), "</invoke>")
_PARAM = (re.compile(r"<parameter(\s[^>]*)>"), "</parameter>")


class MiniMaxM2ToolParser(BufferedToolParser):
    """Reads ``<minimax:tool_call>`` blocks of ``<invoke>`` elements."""

    start_markers = (START,)
    end_markers = (END,)
    accept_unclosed = True

    def region_finder(self, marker: str) -> RegionEnd:
        return Until((END,), (START,))

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        return read_invokes(body, _INVOKE, _PARAM, ToolSchemas(self.tools))
