"""``functiongemma``: FunctionGemma calls, ``<start_function_call>call:NAME{k:v,…}<end_function_call>``.

Inside the braces keys are bare words and values are ``<escape>…<escape>``-delimited strings
(kept exactly), bare numbers, ``true``/``false``/``null``, nested ``{…}`` objects and ``[…]``
lists; a bare word that is none of these is read as a string. Text may come before and between
calls. A call cut by the end of output (or whose ``<end_function_call>`` was dropped as a stop
token) is still a call when its braces are complete; otherwise it, and anything malformed, stays
content verbatim.
"""

from __future__ import annotations

import re
from typing import Any

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd
from heron_plugins.tool_parsers._xml_common import Until, loads_strict

__all__ = ("FunctionGemmaToolParser", "read_arguments")

START, END, ESC = "<start_function_call>", "<end_function_call>", "<escape>"
_HEAD = re.compile(r"\s*call:([^\s{}<>:,]+)\s*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WORDS = {"true": True, "false": False, "null": None}
_MAX_DEPTH = 64


class _Reader:
    """A cursor over the argument syntax; every method raises ValueError on malformed text."""

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos = text, pos

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip()
        if not self.text.startswith(char, self.pos):
            raise ValueError(f"expected {char!r} at {self.pos}")
        self.pos += len(char)

    def escaped(self) -> str:
        end = self.text.find(ESC, self.pos + len(ESC))
        if end < 0:
            raise ValueError("unterminated <escape> string")
        value, self.pos = self.text[self.pos + len(ESC):end], end + len(ESC)
        return value

    def value(self, depth: int) -> Any:
        self.skip()
        if depth > _MAX_DEPTH:
            raise ValueError("nested too deeply")
        if self.text.startswith(ESC, self.pos):
            return self.escaped()
        if self.text.startswith("{", self.pos):
            return self.object(depth + 1)
        if self.text.startswith("[", self.pos):
            return self.array(depth + 1)
        end = self.pos
        while end < len(self.text) and self.text[end] not in ",}]{[<":
            end += 1
        word, self.pos = self.text[self.pos:end].strip(), end
        if not word:
            raise ValueError(f"missing value at {end}")
        if word in _WORDS:
            return _WORDS[word]
        return loads_strict(word) if _NUMBER.fullmatch(word) else word

    def items(self, close: str, read: Any) -> None:
        """Read ``read()`` items separated by commas up to ``close`` (a trailing comma is fine)."""
        while True:
            self.skip()
            if self.text.startswith(close, self.pos):
                self.pos += 1
                return
            read()
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith(close, self.pos):
                raise ValueError(f"expected ',' or {close!r} at {self.pos}")

    def object(self, depth: int) -> dict[str, Any]:
        self.expect("{")
        obj: dict[str, Any] = {}

        def item() -> None:
            key = self.key()
            self.expect(":")
            obj[key] = self.value(depth)

        self.items("}", item)
        return obj

    def array(self, depth: int) -> list[Any]:
        self.expect("[")
        out: list[Any] = []
        self.items("]", lambda: out.append(self.value(depth)))
        return out

    def key(self) -> str:
        if self.text.startswith(ESC, self.pos):
            return self.escaped()
        end = self.text.find(":", self.pos)
        key = self.text[self.pos:end].strip() if end >= 0 else ""
        if not key or any(c in key for c in "{}[],<>"):
            raise ValueError(f"bad key at {self.pos}")
        self.pos = end
        return key


def read_arguments(text: str, pos: int = 0) -> tuple[dict[str, Any], int]:
    """The ``{k:v,…}`` object at ``text[pos:]`` and where it ends; ValueError when malformed."""
    reader = _Reader(text, pos)
    return reader.object(1), reader.pos


class FunctionGemmaToolParser(BufferedToolParser):
    """Reads FunctionGemma ``<start_function_call>call:NAME{…}`` calls."""

    start_markers = (START,)
    end_markers = (END,)
    accept_unclosed = True

    def region_finder(self, marker: str) -> RegionEnd:
        return Until((END,), (START,))

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        head = _HEAD.match(body)
        if head is None:
            return None
        args, end = read_arguments(body, head.end())
        return [ParsedCall(head.group(1), args)] if not body[end:].strip() else None
