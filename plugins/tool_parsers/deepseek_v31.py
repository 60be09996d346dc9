"""``deepseek_v31``: DeepSeek V3.1 tool calls, ``NAME<｜tool▁sep｜>{args}`` with no fence.

Same section and call markers as ``deepseek_v3``: ``<｜tool▁calls▁begin｜>``, then per call
``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>``, then ``<｜tool▁calls▁end｜>``.
Each call streams once it closes. A call cut by the end of output is still a call when its JSON
is complete; otherwise it, and anything malformed, stays content verbatim (the section markers
themselves are always dropped).
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import ParsedCall
from heron_plugins.tool_parsers._xml_common import SectionedToolParser, loads_strict
from heron_plugins.tool_parsers.deepseek_v3 import CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP

__all__ = ("DeepSeekV31ToolParser",)


class DeepSeekV31ToolParser(SectionedToolParser):
    """Reads DeepSeek V3.1 ``NAME<｜tool▁sep｜>{json}`` calls."""

    section_markers = (CALLS_BEGIN, CALLS_END)
    call_start, call_end = CALL_BEGIN, CALL_END

    def parse_call(self, body: str) -> ParsedCall | None:
        name, sep, args = body.partition(SEP)
        name = name.strip()
        if not sep or not name or any(c.isspace() or c in "<>{" for c in name):
            return None
        value = loads_strict(args) if args.strip() else {}
        return ParsedCall(name, value) if isinstance(value, dict) else None
