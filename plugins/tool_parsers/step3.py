"""``step3``: Step-3 tool calls, ``steptml`` XML inside special-token call markers.

The model writes ``<｜tool_calls_begin｜>``, then per call
``<｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="f">`` with
``<steptml:parameter name="k">v</steptml:parameter>`` elements, ``</steptml:invoke><｜tool_call_end｜>``,
and closes with ``<｜tool_calls_end｜>``. Values (less one newline on each side) are converted with
the tool's JSON schema; strings, and parameters the schema does not describe, stay strings. Each
call streams once it closes. A call cut by the end of output is still a call when its
``</steptml:invoke>`` was written; otherwise it, and anything malformed, stays content verbatim
(the section markers themselves are always dropped).
"""

from __future__ import annotations

import re

from heron_plugins.tool_parsers._base import ParsedCall
from heron_plugins.tool_parsers._xml_common import SectionedToolParser, ToolSchemas, read_invokes

__all__ = ("Step3ToolParser",)

CALLS_BEGIN, CALLS_END = "<｜tool_calls_begin｜>", "<｜tool_calls_end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool_call_begin｜>", "<｜tool_call_end｜>", "<｜tool_sep｜>"
_INVOKE = (re.compile(r"<steptml:invoke(\s[^>]*)>"), "</steptml:invoke>")
_PARAM = (re.compile(r"<steptml:parameter(\s[^>]*)>"), "</steptml:parameter>")


class Step3ToolParser(SectionedToolParser):
    """Reads Step-3 ``<steptml:invoke>`` calls."""

    section_markers = (CALLS_BEGIN, CALLS_END)
    call_start, call_end = CALL_BEGIN, CALL_END

    def parse_call(self, body: str) -> ParsedCall | None:
        kind, sep, rest = body.partition(SEP)
        if not sep or kind.strip() not in ("function", ""):
            return None
        calls = read_invokes(rest, _INVOKE, _PARAM, ToolSchemas(self.tools))
        return calls[0] if calls and len(calls) == 1 else None
