"""``deepseek_v32``: DeepSeek V3.2 "DSML" tool calls, XML-like elements with full-width bars.

The model writes ``<｜DSML｜function_calls>``, then per call ``<｜DSML｜invoke name="f">`` with
``<｜DSML｜parameter name="k" string="true|false">v</｜DSML｜parameter>`` elements and
``</｜DSML｜invoke>``, and closes with ``</｜DSML｜function_calls>``. ``string="true"`` keeps the
value as written; ``string="false"`` means the value is JSON (kept as text when it is not valid
JSON); without the attribute the tool's JSON schema decides. Each call streams once it closes. An
invoke cut by the end of output, or anything malformed, stays content verbatim (the section
markers themselves are always dropped).
"""

from __future__ import annotations

import re
from typing import Any

from heron_plugins.tool_parsers._base import ParsedCall
from heron_plugins.tool_parsers._xml_common import (
    SectionedToolParser,
    ToolSchemas,
    attributes,
    convert_value,
    elements,
    loads_strict,
)

__all__ = ("DeepSeekV32ToolParser",)

CALLS_BEGIN, CALLS_END = "<｜DSML｜function_calls>", "</｜DSML｜function_calls>"
INVOKE, INVOKE_END = "<｜DSML｜invoke", "</｜DSML｜invoke>"
_PARAM, _PARAM_END = re.compile(r"<｜DSML｜parameter(\s[^>]*)>"), "</｜DSML｜parameter>"


class DeepSeekV32ToolParser(SectionedToolParser):
    """Reads DeepSeek V3.2 DSML ``invoke`` elements."""

    section_markers = (CALLS_BEGIN, CALLS_END)
    call_start, call_end = INVOKE, INVOKE_END
    accept_unclosed = False

    def parse_call(self, body: str) -> ParsedCall | None:
        head_end = body.find(">")
        head = attributes(body[:head_end]) if head_end >= 0 else None
        params = elements(body, _PARAM, _PARAM_END, head_end + 1) if head else None
        if head is None or params is None or not head.get("name"):
            return None
        schemas = ToolSchemas(self.tools)
        args: dict[str, Any] = {}
        for m, raw in params:
            attrs = attributes(m.group(1))
            if not attrs or "name" not in attrs:
                return None
            args[attrs["name"]] = self._value(raw, attrs.get("string"), schemas.param(head["name"], attrs["name"]))
        return ParsedCall(head["name"], args)

    @staticmethod
    def _value(raw: str, string: str | None, schema: dict[str, Any] | None) -> Any:
        if string is not None and string.lower() == "true":
            return raw
        if string is not None and string.lower() == "false":
            try:
                return loads_strict(raw)
            except ValueError:
                pass
        return convert_value(raw, schema)
