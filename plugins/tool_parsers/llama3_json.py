"""``llama3_json`` (alias ``llama4_json``): one or more JSON call objects, separated by ``;``.

Llama 3.1–3.3 and Llama 4 answer a tool call with the whole output: an optional
``<|python_tag|>`` then ``{"name": …, "parameters" or "arguments": {…}}`` objects. A call region
opens at ``<|python_tag|>`` anywhere, or at a ``{`` that starts the output; it runs to the end
of the output (so it settles at ``finish()``); a trailing ``<|eom_id|>``/``<|eot_id|>`` is
dropped with it. Anything that is not a list of call objects stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall
from heron_plugins.tool_parsers._calls import json_calls, json_values

__all__ = ("Llama3JsonToolParser",)

_END_TOKENS = ("<|eom_id|>", "<|eot_id|>")


class Llama3JsonToolParser(BufferedToolParser):
    """Reads ``;``-separated JSON call objects that make up the rest of the output."""

    start_markers = ("<|python_tag|>",)
    anchored_markers = ("{",)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        body = body.rstrip()
        for end in _END_TOKENS:  # kept when special tokens are not skipped
            body = body.removesuffix(end).rstrip()
        values = json_values(("{" if marker == "{" else "") + body, ";")
        if values is None or not all(isinstance(v, dict) for v in values):
            return None
        return json_calls(values)
