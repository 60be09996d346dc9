"""``qwen3_coder`` (alias ``qwen3_xml``): Qwen3-Coder / Qwen3.5+ XML tool calls.

The model writes ``<tool_call><function=NAME><parameter=k>v</parameter>…</function></tool_call>``
(usually one element per line); text may come before and between calls. A parameter's value is
the text between its tags less one newline on each side, converted with the tool's JSON schema:
integer/number/boolean/object/array/null are parsed, strings (and parameters the schema does not
describe) stay strings, a value that does not fit its type stays a string. A missing
``</parameter>`` is tolerated (the next ``<parameter=`` or ``</function>`` ends the value). A
block cut by the end of output is still a call when its ``</function>`` was written; otherwise
it, and anything malformed, stays content verbatim.
"""

from __future__ import annotations

import re

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._xml_common import ToolSchemas, Until, elements, trim_newline

__all__ = ("Qwen3CoderToolParser", "parse_functions")

START, END = "<tool_call>", "</tool_call>"
_FUNCTION, _FUNCTION_END = re.compile(r"<function=([^>\n]+)>"), "</function>"
_PARAM, _PARAM_END = re.compile(r"<parameter=([^>\n]+)>"), "</parameter>"


def parse_functions(body: str, schemas: ToolSchemas) -> list[ParsedCall] | None:
    """Every ``<function=NAME>…</function>`` in ``body`` (only whitespace around), or None."""
    found = elements(body, _FUNCTION, _FUNCTION_END)
    if not found:
        return None
    calls = []
    for m, inner in found:
        name, raw = m.group(1).strip(), _parameters(inner)
        if not name or raw is None:
            return None
        calls.append(ParsedCall(name, schemas.convert(name, raw)))
    return calls


def _parameters(inner: str) -> dict[str, str] | None:
    raw: dict[str, str] = {}
    pos, n = 0, len(inner)
    while True:
        while pos < n and inner[pos].isspace():
            pos += 1
        if pos == n:
            return raw
        m = _PARAM.match(inner, pos)
        if m is None:
            return None
        end, nxt = inner.find(_PARAM_END, m.end()), _PARAM.search(inner, m.end())
        if nxt is not None and (end < 0 or nxt.start() < end):
            value, pos = inner[m.end():nxt.start()], nxt.start()
        elif end >= 0:
            value, pos = inner[m.end():end], end + len(_PARAM_END)
        else:
            value, pos = inner[m.end():], n
        raw[m.group(1).strip()] = trim_newline(value)


class Qwen3CoderToolParser(BufferedToolParser):
    """Reads ``<tool_call><function=NAME>`` XML calls."""

    start_markers = (START,)
    end_markers = (END,)
    accept_unclosed = True

    def region_finder(self, marker: str) -> RegionEnd:
        return Until(self.end_markers, self.start_markers)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        return parse_functions(body, ToolSchemas(self.tools))
