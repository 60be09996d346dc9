"""Marker scanning for streamed text, and a filter that unwraps an answer tag pair.

Streaming parsers must decide on text that may continue in the next chunk. :func:`find_marker`
answers the one question they all ask: how much of the buffer is certainly free of markers, and
does a marker start right after it? A buffer tail that could still grow into a marker is held
back, so the result never depends on where the chunks were cut.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ("AnswerUnwrapper", "find_marker", "partial_marker_start")


def partial_marker_start(buf: str, markers: Sequence[str]) -> int | None:
    """The smallest ``i`` such that ``buf[i:]`` is a non-empty proper prefix of some marker."""
    longest = max(map(len, markers), default=0)
    for i in range(max(0, len(buf) - longest + 1), len(buf)):
        tail = buf[i:]
        if any(len(m) > len(tail) and m.startswith(tail) for m in markers):
            return i
    return None


def find_marker(buf: str, markers: Sequence[str], *, final: bool) -> tuple[int, str | None]:
    """Where the first marker of ``markers`` starts in ``buf``.

    Returns ``(i, marker)``: ``buf[:i]`` holds no marker and may be emitted. If ``marker`` is
    not None it starts at ``i`` (the longest one when several match there); if it is None,
    ``buf[i:]`` may be the beginning of a marker and must be held back (empty when ``final``:
    at end of output nothing can grow any more).
    """
    found, found_at = None, len(buf)
    for m in markers:
        at = buf.find(m)
        if at != -1 and (at < found_at or (at == found_at and len(m) > len(found or ""))):
            found, found_at = m, at
    if not final:
        partial = partial_marker_start(buf, markers)
        if partial is not None and partial <= found_at:
            return partial, None
    return found_at, found


class AnswerUnwrapper:
    """Streams the content region, dropping one ``open``/``close`` tag pair around the answer.

    Whitespace around the tags (before ``open``, right inside both tags, after ``close``) is
    dropped too; content that does not begin with ``open`` passes through unchanged.
    """

    def __init__(self, open_tag: str, close_tag: str) -> None:
        self.open_tag, self.close_tag = open_tag, close_tag
        self._phase = "lead"  # lead -> inside -> after, or lead -> plain
        self._buf = ""
        self._fresh = True  # inside, before the answer's first non-space character

    def feed(self, text: str, *, final: bool = False) -> str:
        """Take more content; return what may be emitted now (everything when ``final``)."""
        self._buf += text
        out: list[str] = []
        while True:
            buf = self._buf
            if self._phase == "lead":
                stripped = buf.lstrip()
                if stripped.startswith(self.open_tag):
                    self._buf, self._phase = stripped[len(self.open_tag) :], "inside"
                    continue
                if not final and self.open_tag.startswith(stripped):
                    return "".join(out)  # may still become the open tag
                self._phase = "plain"
            elif self._phase == "inside":
                if self._fresh:
                    self._buf = buf = buf.lstrip()
                    if not buf:
                        return "".join(out)
                    self._fresh = False
                at, marker = find_marker(buf, (self.close_tag,), final=final)
                if marker is not None:
                    out.append(buf[:at].rstrip())
                    self._buf, self._phase = buf[at + len(marker) :], "after"
                    continue
                body = buf[:at]
                keep = len(body) - len(body.rstrip()) if not final else 0
                out.append(body[: len(body) - keep])
                self._buf = body[len(body) - keep :] + buf[at:]
                return "".join(out)
            elif self._phase == "after":
                if not buf.strip():  # trailing whitespace after the answer is dropped
                    self._buf = "" if final else buf
                    return "".join(out)
                self._phase = "plain"
            else:
                out.append(buf)
                self._buf = ""
                return "".join(out)
