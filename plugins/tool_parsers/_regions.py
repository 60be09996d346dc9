"""Where a tool-call region ends: small resumable finders used by :mod:`._base`.

A finder is built when a region's start marker is seen and asked, each time text arrives,
``find(text, body, final)``: ``body`` is where the marker ended; it returns
``(body_end, region_end)`` once the end is decided (the body is ``text[body:body_end]``, the
region, end marker included, stops at ``region_end``) or None while undecided. With
``final=True`` the text is complete; None then means "cut by the end of output". A finder may
keep state between calls on the same growing text (so long regions are scanned once, not once
per delta); the answer must depend only on the text, never on how it was chunked.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ("JsonValueEnd", "RegionEnd", "ToEnd", "UntilMarker")

_WS = " \t\r\n"


class RegionEnd(Protocol):
    """Decides where one region ends (see the module docstring)."""

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None: ...


class UntilMarker:
    """The region ends after the first of ``ends`` (the body stops before it)."""

    def __init__(self, *ends: str) -> None:
        self.ends = ends
        self._from = -1  # no end marker starts before this index

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        start = max(body, self._from)
        best: tuple[int, int] | None = None
        for end in self.ends:
            j = text.find(end, start)
            if j >= 0 and (best is None or j < best[0] or (j == best[0] and j + len(end) > best[1])):
                best = (j, j + len(end))
        if best is None:
            self._from = max(body, len(text) - max(map(len, self.ends)) + 1)
        return best


class ToEnd:
    """The region runs to the end of the output: decided only when the text is complete."""

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        return (len(text), len(text)) if final else None


class JsonValueEnd:
    """The region is one JSON object or array (after optional whitespace), bracket-matched.

    Anything else after the whitespace ends the region at once with an empty body, so the
    caller's parse fails fast and the text goes on as content. Strings are skipped with their
    escapes, so brackets inside them do not count.
    """

    def __init__(self, *, opened: bool = False) -> None:
        """``opened``: the start marker was the value's opening bracket (e.g. an anchored ``[``)."""
        self._i = -1  # next index to scan
        self._depth = 1 if opened else 0
        self._in_str = False
        self._esc = False

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        i = body if self._i < 0 else self._i
        n = len(text)
        if self._depth == 0:  # still before the value
            while i < n and text[i] in _WS:
                i += 1
            if i == n:
                self._i = i
                return None
            if text[i] not in "[{":
                return (i, i)
        depth, in_str, esc = self._depth, self._in_str, self._esc
        while i < n:
            ch = text[i]
            i += 1
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return (i, i)
        self._i, self._depth, self._in_str, self._esc = i, depth, in_str, esc
        return None

