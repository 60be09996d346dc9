"""``kimi_k2``: Kimi K2 tool calls, whose ``functions.NAME:IDX`` header is also the call's id.

The model writes ``<|tool_calls_section_begin|>``, then per call
``<|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}<|tool_call_end|>``, and
closes with ``<|tool_calls_section_end|>`` (the singular ``tool_call_section`` spelling is
accepted too). The header is sent as the tool-call id, as Kimi's chat template expects it back.
Each call streams once it closes. A call cut by the end of output is still a call when its JSON
is complete; otherwise it, and anything malformed, stays content verbatim (the section markers
themselves are always dropped).
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import ParsedCall
from heron_plugins.tool_parsers._xml_common import SectionedToolParser, loads_strict

__all__ = ("KimiK2ToolParser",)

SECTION_MARKERS = (
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_section_begin|>",
    "<|tool_call_section_end|>",
)
CALL_BEGIN, ARGS_BEGIN, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"


def split_header(header: str) -> str | None:
    """``functions.NAME:IDX`` (or ``NAME:IDX``, or ``NAME``) → NAME, None when malformed."""
    name = header.removeprefix("functions.")
    head, colon, idx = name.rpartition(":")
    if colon and idx.isdigit():
        name = head
    if not name or any(c.isspace() or c in "<>{}:" for c in name):
        return None
    return name


class KimiK2ToolParser(SectionedToolParser):
    """Reads Kimi K2 ``<|tool_call_begin|>`` calls; the header is the id."""

    section_markers = SECTION_MARKERS
    call_start, call_end = CALL_BEGIN, CALL_END

    def parse_call(self, body: str) -> ParsedCall | None:
        header, sep, args = body.partition(ARGS_BEGIN)
        header = header.strip()
        name = split_header(header) if sep else None
        if name is None:
            return None
        value = loads_strict(args) if args.strip() else {}
        return ParsedCall(name, value, id=header) if isinstance(value, dict) else None
