"""``glm45`` (alias ``glm47``): GLM-4.5/4.6/4.7 tool calls as ``<arg_key>``/``<arg_value>`` pairs.

The model writes ``<tool_call>NAME`` (a newline after the name in GLM-4.5/4.6, none in 4.7), then
pairs ``<arg_key>k</arg_key><arg_value>v</arg_value>``, then ``</tool_call>``; text may come
before and between calls. Values are strings unless the tool's JSON schema declares another type
(then they are converted; a value that does not fit stays a string). A ``<tool_call>`` left open
is ended by the next one; one cut by the end of output, or anything malformed, stays content
verbatim.
"""

from __future__ import annotations

import re

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._xml_common import ToolSchemas, Until

__all__ = ("Glm45ToolParser",)

START, END = "<tool_call>", "</tool_call>"
_NAME = re.compile(r"\s*([^\s<>]+)")
_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)


class Glm45ToolParser(BufferedToolParser):
    """Reads GLM ``<tool_call>NAME<arg_key>…`` calls."""

    start_markers = (START,)
    end_markers = (END,)
    accept_unclosed = False

    def region_finder(self, marker: str) -> RegionEnd:
        return Until((END,), (START,))

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        m = _NAME.match(body)
        if m is None:
            return None
        raw: dict[str, str] = {}
        pos = m.end()
        while (pair := _PAIR.match(body, pos)) is not None:
            raw[pair.group(1).strip()] = pair.group(2)
            pos = pair.end()
        if body[pos:].strip():
            return None
        name = m.group(1)
        return [ParsedCall(name, ToolSchemas(self.tools).convert(name, raw))]
