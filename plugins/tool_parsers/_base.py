r"""Shared machinery of the built-in tool parsers: write the format once, stream it for free.

API (stable; built-in parsers and other formats build on it):

:class:`BufferedToolParser` reads an output as content interleaved with *regions*: a region
opens at a start marker and ends where its finder says; its body is read by the subclass.
A subclass sets class attributes and implements one method::

    class HermesToolParser(BufferedToolParser):
        start_markers = ("<tool_call>",)       # open a region anywhere
        anchored_markers = ()                  # open one only at the start (after whitespace)
        end_markers = ("</tool_call>",)        # default finder; () = region runs to end of output
        accept_unclosed = True                 # a region cut by the end of output may still parse
        strip_around_calls = True              # drop whitespace next to calls (rule below)
        keep_special_tokens = True             # adjust_request: skip_special_tokens=False with tools

        def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
            ...  # None (or raising) = not calls: the marker goes out as content, scanning resumes after it

Override ``region_finder(marker)`` for regions not closed by an end marker (e.g.
``JsonValueEnd()`` for "marker then one JSON value", ``ToEnd()``); see :mod:`._regions`.
Helpers: :mod:`._calls` (``ParsedCall``, ``json_call(s)``, ``json_values``,
``arguments_json``), :mod:`._pythonic` (``pythonic_calls``/``pythonic_call`` via ``ast``),
:mod:`._json_block` (``JsonBlockToolParser``: markers + ``body_shape`` for JSON bodies).

``parse(text)`` and ``parse_delta``/``finish`` run the very same scanner (``final=True`` for
``parse`` and ``finish``), so streaming gives exactly what ``parse`` gives however the text is
chunked: content is sent as soon as it cannot be part of a region (a tail that may grow into a
start marker, and, with ``strip_around_calls``, trailing whitespace, are held back); a call is
sent whole (id, type, name, full arguments) in one delta once its region has closed; regions
without an end are settled by ``finish()``. Ids are memoised per call index
(``self.make_call_id(index, name)``, or the format's own ``ParsedCall.id`` unless an earlier call
of the output already has that id), so ``parse`` on the
streaming parser returns the streamed ids. Arguments are normalised to compact JSON
(``ensure_ascii=False``); a call whose arguments are not an object fails its region.

Whitespace rule (``strip_around_calls``): whitespace next to parsed regions is dropped where it
would lead or trail the content (``"Sure.\n<call>\n"`` → ``"Sure."``) and kept where content
follows on both sides (``"A\n<call>\nB"`` → ``"A\n\nB"``); everything else, output without
calls and malformed regions included, is content verbatim.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from heron.interfaces import ToolParser
from heron.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    ToolParseResult,
)
from heron_plugins.tool_parsers._calls import ParsedCall, arguments_json
from heron_plugins.tool_parsers._regions import JsonValueEnd, RegionEnd, ToEnd, UntilMarker

__all__ = ("BufferedToolParser", "JsonValueEnd", "ParsedCall", "RegionEnd", "ToEnd", "UntilMarker")

Call = tuple[str, str, str | None]  # (name, JSON arguments, format's own id)


@dataclass(slots=True)
class _Region:
    marker: str
    body: int  # index where the marker ends
    finder: RegionEnd


@dataclass(slots=True)
class _Scan:
    """Scanner state over one output; ``text[:pos]`` is decided."""

    text: str = ""
    pos: int = 0
    search_from: int = 0  # no start marker begins in [pos, search_from)
    started: bool = False  # non-whitespace seen: anchored markers no longer apply
    has_content: bool = False  # non-whitespace content decided
    gap: bool = False  # a parsed region came after the last content
    held_ws: str = ""  # decided whitespace not yet sent (see the whitespace rule)
    region: _Region | None = None
    content: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


class BufferedToolParser(ToolParser):
    """Base for region formats: implement ``parse_region``; see the module docstring."""

    start_markers: ClassVar[tuple[str, ...]] = ()
    anchored_markers: ClassVar[tuple[str, ...]] = ()
    end_markers: ClassVar[tuple[str, ...]] = ()
    accept_unclosed: ClassVar[bool] = False
    strip_around_calls: ClassVar[bool] = True
    #: Markers are special tokens in many vocabularies: keep them in the text when tools are on
    #: (False only for formats without marker tokens, e.g. a bare Python list).
    keep_special_tokens: ClassVar[bool] = True

    def __init__(self, tokenizer: Any, tools: list[dict] | None = None) -> None:
        super().__init__(tokenizer, tools)
        self._scan = _Scan()
        self._ids: list[str] = []
        self._sent = 0  # calls streamed so far

    # -- what a format provides -------------------------------------------------------------

    @abstractmethod
    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        """The calls in one region's body (between marker and end), or None when malformed."""

    def region_finder(self, marker: str) -> RegionEnd:
        """A fresh finder for the region opened by ``marker``."""
        return UntilMarker(*self.end_markers) if self.end_markers else ToEnd()

    # -- the ToolParser contract ------------------------------------------------------------

    def adjust_request(self, request: Any) -> Any:
        """With tools on (and ``tool_choice`` not "none"), set ``skip_special_tokens = False``.

        The request is changed in place and returned. The server hides the special tokens
        that no parser consumed, so the answer's content is the same as with them skipped.
        """
        wanted = (self.keep_special_tokens and getattr(request, "tools", None)
                  and getattr(request, "tool_choice", None) != "none"
                  and getattr(request, "skip_special_tokens", False))
        if wanted:
            request.skip_special_tokens = False
        return request

    def parse(self, text: str) -> ToolParseResult:
        scan = _Scan(text=text)
        self._advance(scan, final=True)
        calls = [
            ToolCall(id=self._call_id(i, name, own), function=FunctionCall(name=name, arguments=args))
            for i, (name, args, own) in enumerate(scan.calls)
        ]
        return ToolParseResult(content="".join(scan.content) or None, tool_calls=calls)

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        scan = self._scan
        scan.text += delta_text
        self._advance(scan, final=False)
        if scan.region is None and scan.pos:  # forget decided text (regions keep absolute indexes)
            scan.text, scan.search_from, scan.pos = scan.text[scan.pos:], max(0, scan.search_from - scan.pos), 0
        return self._flush()

    def finish(self) -> DeltaMessage | None:
        self._advance(self._scan, final=True)
        return self._flush()

    # -- machinery ----------------------------------------------------------------------------

    def _call_id(self, index: int, name: str, own: str | None) -> str:
        while len(self._ids) <= index:  # a format's own id is kept unless an earlier call took it
            mine = own if own and len(self._ids) == index and own not in self._ids else None
            self._ids.append(mine or self.make_call_id(len(self._ids), name))
        return self._ids[index]

    def _flush(self) -> DeltaMessage | None:
        scan = self._scan
        content, calls = "".join(scan.content), scan.calls
        scan.content, scan.calls = [], []
        if not content and not calls:
            return None
        deltas = []
        for name, args, own in calls:
            index, self._sent = self._sent, self._sent + 1
            deltas.append(DeltaToolCall(index=index, id=self._call_id(index, name, own), type="function",
                                        function=DeltaFunctionCall(name=name, arguments=args)))
        return DeltaMessage(content=content or None, tool_calls=deltas)

    def _advance(self, s: _Scan, final: bool) -> None:
        """Decide as much of ``s.text`` as can be decided; results go to ``s.content``/``s.calls``."""
        while True:
            if s.region is not None:
                if not self._close_region(s, final):
                    return
                continue
            at, marker = self._next_start(s, final)
            self._content(s, s.text[s.pos:at])
            s.pos = at
            if marker is None:
                if final:
                    if s.held_ws and not s.gap:
                        s.content.append(s.held_ws)
                    s.held_ws = ""
                return
            s.region = _Region(marker, at + len(marker), self.region_finder(marker))

    def _close_region(self, s: _Scan, final: bool) -> bool:
        region = s.region
        assert region is not None
        found = region.finder.find(s.text, region.body, final)
        if found is None and not final:
            return False
        body_end, end = found if found is not None else (len(s.text), len(s.text))
        calls = None
        if found is not None or self.accept_unclosed:
            calls = self._read_region(region.marker, s.text[region.body:body_end])
        s.region, s.started = None, True
        if calls is None:  # not calls after all: the marker is content, scanning resumes after it
            self._content(s, s.text[s.pos:region.body])
            s.pos = s.search_from = region.body
        else:
            s.gap = True
            s.calls += calls
            s.pos = s.search_from = end
        return True

    def _read_region(self, marker: str, body: str) -> list[Call] | None:
        try:
            parsed = self.parse_region(marker, body)
        except Exception:  # model output is untrusted: any failure means "not calls"
            return None
        if parsed is None:
            return None
        calls: list[Call] = []
        for call in parsed:
            args = arguments_json(call.arguments)
            if args is None or not isinstance(call.name, str) or not call.name:
                return None
            calls.append((call.name, args, call.id))
        return calls

    def _content(self, s: _Scan, text: str) -> None:
        if not text:
            return
        if not self.strip_around_calls:
            s.content.append(text)
            s.started = s.started or not text.isspace()
            return
        head = text.rstrip()
        if not head:  # whitespace: undecided until we see what follows it
            s.held_ws += text
            return
        body = head.lstrip()
        lead = s.held_ws + head[: len(head) - len(body)]
        if lead and (s.has_content or not s.gap):  # whitespace after calls only between contents
            s.content.append(lead)
        s.content.append(body)
        s.held_ws = text[len(head):]
        s.started = s.has_content = True
        s.gap = False

    def _next_start(self, s: _Scan, final: bool) -> tuple[int, str | None]:
        """Where the next region starts and its marker; (hold index, None) when none is sure."""
        text, n = s.text, len(s.text)
        candidates: list[int] = []
        anchor = -1
        if not s.started and self.anchored_markers:
            anchor = s.pos
            while anchor < n and text[anchor].isspace():
                anchor += 1
            candidates.append(anchor)  # at n: only whitespace so far, nothing to decide yet
        longest = max(map(len, self.start_markers), default=0)
        if longest:
            hits = [j for m in self.start_markers if (j := text.find(m, max(s.pos, s.search_from))) >= 0]
            if hits:
                candidates.append(min(hits))
            else:
                s.search_from = max(s.pos, n - longest + 1)
            if not final:  # a tail that may grow into a marker
                tail = next((k for k in range(max(s.pos, n - longest + 1), n)
                             if any(m.startswith(text[k:]) for m in self.start_markers)), None)
                if tail is not None:
                    candidates.append(tail)
        for at in sorted(set(candidates)):
            if at >= n:
                return n, None
            markers = list(self.start_markers)
            if at == anchor:
                markers += self.anchored_markers
            rest = text[at:]
            if not final and any(len(m) > len(rest) and m.startswith(rest) for m in markers):
                return at, None  # hold: a marker may still be forming here
            full = [m for m in markers if rest.startswith(m)]
            if full:
                return at, max(full, key=len)
        return n, None
