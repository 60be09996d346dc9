"""``mistral``: ``[TOOL_CALLS]`` followed by calls, in either of Mistral's two layouts.

- new tokenizers (v11+): ``[TOOL_CALLS]name[ARGS]{json}``, repeated for parallel calls (an
  optional ``[CALL_ID]id`` between name and ``[ARGS]`` becomes the call's id when it has 9
  characters);
- older ones: ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`` (a single object is accepted).

Each region ends where its JSON ends, so text may follow. Tool-call ids are exactly 9
alphanumeric characters, as Mistral's chat templates require. A name that is not a plain
identifier, or JSON cut by the end of output, leaves the text as content.
"""

from __future__ import annotations

import json
import re

from heron.protocol import make_alnum_id
from heron_plugins.tool_parsers._base import BufferedToolParser, JsonValueEnd, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._calls import json_calls

__all__ = ("MistralToolParser",)

ARGS, CALL_ID = "[ARGS]", "[CALL_ID]"
_HEAD = re.compile(r"([A-Za-z0-9_.\-]+)(?:\[CALL_ID\]([A-Za-z0-9]*))?")


class _MistralEnd:
    """Old layout: one JSON value. New layout: ``name[CALL_ID]id`` up to ``[ARGS]``, then JSON."""

    def __init__(self) -> None:
        self._json: JsonValueEnd | None = None
        self._from = -1  # where the JSON (or the name) starts

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        if self._json is None:
            start = body
            while start < len(text) and text[start].isspace():
                start += 1
            if start == len(text):
                return None
            if text[start] in "[{" and not text.startswith(CALL_ID, start) and not text.startswith(ARGS, start):
                self._json, self._from = JsonValueEnd(), body
            else:
                args = text.find(ARGS, body)
                head = _HEAD.match(text, body)
                upto = head.end() if head else body
                if args < 0 or args != upto:
                    if args < 0 and _may_grow(text[upto:]):
                        return None
                    return (upto, upto)  # not ``name[ARGS]``: the region fails here
                self._json, self._from = JsonValueEnd(), args + len(ARGS)
        return self._json.find(text, self._from, final)


def _may_grow(rest: str) -> bool:
    """Whether ``rest`` (what follows the name so far) can still become ``[CALL_ID]…`` or ``[ARGS]``."""
    return ARGS.startswith(rest) or CALL_ID.startswith(rest)


class MistralToolParser(BufferedToolParser):
    """Reads ``[TOOL_CALLS]`` calls in the new or the old layout."""

    start_markers = ("[TOOL_CALLS]",)

    def make_call_id(self, index: int, name: str) -> str:
        return make_alnum_id(9)

    def region_finder(self, marker: str) -> RegionEnd:
        return _MistralEnd()

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        stripped = body.lstrip()
        if stripped[:1] in ("[", "{") and not stripped.startswith((ARGS, CALL_ID)):
            return json_calls(json.loads(stripped))
        head, sep, args = body.partition(ARGS)
        match = _HEAD.fullmatch(head)
        if not sep or match is None:
            return None
        own = match.group(2)  # the model's own id, kept when it has Mistral's shape
        return [ParsedCall(match.group(1), json.loads(args), own if own and len(own) == 9 else None)]
