"""``openai``: gpt-oss (Harmony) tool calls, messages addressed ``to=functions.NAME``.

Harmony output is a run of messages ``[<|start|>ROLE]<|channel|>HEADER<|message|>BODY`` each
closed by ``<|end|>``, ``<|return|>`` or ``<|call|>``. A tool call is a message whose header (in
the role part or the channel part) names the recipient ``functions.NAME``, e.g.
``<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>``;
its body is the arguments object (empty = ``{}``).

How the rest is read (this parser works alone, or after the ``openai_gptoss`` reasoning parser,
which unwraps ``analysis``/``final`` messages and leaves tool-call messages verbatim):

- the body of any other message (``final``, a ``commentary`` preamble, no channel) is content;
  its header, ``<|start|>ROLE`` and closing marker are dropped, as is whitespace at its edges;
- an ``analysis`` message is reasoning, not content: it is dropped (run the ``openai_gptoss``
  reasoning parser to receive it);
- text outside any message is content;
- a message to another recipient (a built-in tool such as ``browser.search``), a call whose body
  is not a JSON object (e.g. cut by the end of output) and a header never finished by
  ``<|message|>`` are content verbatim (only ``<|end|>``/``<|return|>`` markers are dropped).

A call's message may also be ended by the next ``<|start|>``/``<|channel|>`` or by the end of
output when its JSON is complete. Each call streams once its message has closed.
"""

from __future__ import annotations

import re

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._xml_common import Immediate, Until, loads_strict

__all__ = ("OpenAIToolParser",)

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
CLOSERS = ("<|call|>", "<|end|>", "<|return|>")
_RECIPIENT = re.compile(r"(?:^|\s)to=([^\s<]+)")
_WORD = re.compile(r"\s*([A-Za-z_]+)")


def _kind(marker: str, header: str) -> str:
    """What a message is from its header: ``call``, ``other`` (another recipient), ``analysis`` or ``text``."""
    recipient = _RECIPIENT.search(header.replace(CHANNEL, " "))
    if recipient is not None:
        return "call" if recipient.group(1).startswith("functions.") else "other"
    channel = header.partition(CHANNEL)[2] if marker == START else header
    word = _WORD.match(channel)
    return "analysis" if word and word.group(1) == "analysis" else "text"


class _MessageEnd:
    """A text message's region is its header (its body then flows as content); others run to a closer."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self._header = Until((MESSAGE,))
        self._body: Until | None = None
        self._from = 0  # where the body starts, once the header is read

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        if self._body is None:
            found = self._header.find(text, body, final)
            if found is None:
                return None
            if _kind(self.marker, text[body:found[0]]) == "text":
                return (found[1], found[1])
            self._body = Until(CLOSERS, (START, CHANNEL))
            self._from = found[1]
        return self._body.find(text, self._from, final)


class OpenAIToolParser(BufferedToolParser):
    """Reads Harmony messages addressed to ``functions.NAME``; see the module docstring."""

    start_markers = (START, CHANNEL, "<|end|>", "<|return|>")
    end_markers = (MESSAGE, *CLOSERS)  # informative: region_finder decides
    accept_unclosed = True

    def region_finder(self, marker: str) -> RegionEnd:
        return _MessageEnd(marker) if marker in (START, CHANNEL) else Immediate()

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        if marker not in (START, CHANNEL):
            return []  # a closing marker
        header, sep, payload = body.partition(MESSAGE)
        if not sep:
            return None  # header cut by the end of output
        kind = _kind(marker, header)
        if kind in ("text", "analysis"):
            return []
        if kind == "other":
            return None
        recipient = _RECIPIENT.search(header.replace(CHANNEL, " "))
        name = recipient.group(1).removeprefix("functions.") if recipient else ""
        args = loads_strict(payload) if payload.strip() else {}
        return [ParsedCall(name, args)] if name and isinstance(args, dict) else None
