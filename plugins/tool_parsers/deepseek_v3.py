"""``deepseek_v3``: DeepSeek V3 / R1 tool calls, with the arguments in a fenced JSON block.

The model writes ``<｜tool▁calls▁begin｜>``, then per call ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME``,
a newline, a ```` ```json ```` fenced block holding the arguments object and
``<｜tool▁call▁end｜>``, and closes with ``<｜tool▁calls▁end｜>``. Text before the section is
content. Each call streams once it closes. A call cut by the end of output is still a call when
its fenced block is complete; otherwise it, and anything malformed, stays content verbatim (the
section markers themselves are always dropped).
"""

from __future__ import annotations

import re

from heron_plugins.tool_parsers._base import ParsedCall
from heron_plugins.tool_parsers._xml_common import SectionedToolParser, loads_strict

__all__ = ("DeepSeekV3ToolParser",)

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"

# "function" SEP NAME newline ```json newline {args} newline ```
_CALL = re.compile(r"\s*(?:function)?" + re.escape(SEP) + r"([^\n`<]+?)\s*```(?:json)?[ \t]*\n?(.*?)```\s*", re.S)


class DeepSeekV3ToolParser(SectionedToolParser):
    """Reads DeepSeek V3 ``<｜tool▁call▁begin｜>`` calls with fenced JSON arguments."""

    section_markers = (CALLS_BEGIN, CALLS_END)
    call_start, call_end = CALL_BEGIN, CALL_END

    def parse_call(self, body: str) -> ParsedCall | None:
        m = _CALL.fullmatch(body)
        if m is None:
            return None
        args = loads_strict(m.group(2))
        return ParsedCall(m.group(1).strip(), args) if isinstance(args, dict) else None
