"""Record every ``/v1/responses`` exchange on the wire and check it against OpenAI's published schemas.

:class:`RecordingTransport` sits under both the openai SDK client and the raw ``httpx`` client of
the Responses tests, so what is validated is exactly what heron sent, whichever client read it:
a JSON ``Response`` (create, retrieve, cancel), a ``ResponseItemList`` (input_items), the delete
acknowledgement, an ``ErrorResponse`` for every 4xx/5xx, and each event of an SSE stream
(``ResponseStreamEvent``, ``event:`` name equal to the data's ``type``, ``sequence_number`` rising
by one from 0, or from ``starting_after + 1`` on a replay, and a finished stream ending in a
terminal event). :meth:`WireLog.check` validates what was recorded since its last call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.openai_schemas import validate, validate_event

__all__ = ("TERMINAL", "Exchange", "RecordingTransport", "WireLog", "parse_sse")

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_ITEMS = re.compile(r"^/v1/responses/[^/]+/input_items$")


@dataclass
class Exchange:
    """One request to ``/v1/responses...`` and the bytes of its answer."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    content_type: str
    body: bytearray = field(default_factory=bytearray)
    finished: bool = False  # the whole body was read (a stream may be closed early)

    def json(self) -> Any:
        return json.loads(bytes(self.body))

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """The SSE events of a stream as (event name, decoded data); an unfinished tail is left out."""
        return parse_sse(bytes(self.body).decode())

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''} -> {self.status}"


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Decode ``event: NAME\\ndata: JSON\\n\\n`` blocks (only complete ones); fails on anything else."""
    out = []
    blocks = text.replace("\r\n", "\n").split("\n\n")
    for block in blocks[:-1]:  # the last piece is what follows the final blank line: empty or unfinished
        if not block.strip() or all(line.startswith(":") for line in block.splitlines()):
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        assert set(fields) <= {"event", "data", "id", "retry"}, f"unexpected SSE lines: {block!r}"
        assert fields.get("data") != "[DONE]", "the Responses API stream has no [DONE] sentinel"
        out.append((fields.get("event", ""), json.loads(fields["data"])))
    return out


class _Tee(httpx.SyncByteStream):
    """Passes the body through while copying it into ``record``."""

    def __init__(self, inner: httpx.SyncByteStream, record: Exchange, on_close: Callable[[Exchange], None]) -> None:
        self.inner, self.record, self.on_close = inner, record, on_close

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.record.body += chunk
            yield chunk
        self.record.finished = True

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.on_close(self.record)


class WireLog:
    """The recorded exchanges; :meth:`check` validates the new ones."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._checked = 0

    def add(self, record: Exchange) -> None:
        self.exchanges.append(record)

    def last(self, method: str, path_prefix: str = "/v1/responses") -> Exchange:
        """The latest exchange with ``method`` whose path starts with ``path_prefix``."""
        for record in reversed(self.exchanges):
            if record.method == method and record.path.startswith(path_prefix):
                return record
        raise AssertionError(f"no {method} {path_prefix} was recorded")

    def check(self) -> int:
        """Validate every exchange recorded since the last call; returns how many were checked."""
        new = self.exchanges[self._checked:]
        self._checked = len(self.exchanges)
        for record in new:
            try:
                _check(record)
            except AssertionError as exc:
                raise AssertionError(f"{record}: {exc}") from None
        return len(new)


def _check(record: Exchange) -> None:
    if record.content_type.startswith("text/event-stream"):
        assert record.status == 200, record.status
        _check_stream(record)
        return
    assert record.finished, "the body was not read to its end"
    assert record.content_type.startswith("application/json"), f"content-type {record.content_type!r}"
    body = record.json()
    if record.status >= 400:
        validate(body, "ErrorResponse")
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    elif record.method == "DELETE":
        assert body == {"id": body.get("id"), "object": "response.deleted", "deleted": True}, body
    elif _ITEMS.match(record.path):
        validate(body, "ResponseItemList")
    else:
        validate(body, "Response")


def _check_stream(record: Exchange) -> None:
    events = record.events()
    assert events, "an empty stream"
    first = int(record.query.get("starting_after", -1)) + 1
    for n, (name, data) in enumerate(events):
        assert name == data.get("type"), f"event {n}: `event: {name}` but data type {data.get('type')!r}"
        validate_event(data)
        assert data["sequence_number"] == first + n, f"event {n}: sequence_number {data['sequence_number']}"
        if data["type"] == "error":
            assert n + 1 < len(events) and events[n + 1][0] == "response.failed", "an error event precedes response.failed"
    if record.finished:
        assert events[-1][0] in TERMINAL, f"a finished stream ends with {events[-1][0]!r}"
        assert all(name not in TERMINAL for name, _ in events[:-1]), "a terminal event before the end"


class RecordingTransport(httpx.BaseTransport):
    """An ``httpx`` transport that records every ``/v1/responses...`` exchange into ``log``."""

    def __init__(self, log: WireLog) -> None:
        self.log = log
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.startswith("/v1/responses"):
            return response
        record = Exchange(request.method, request.url.path, dict(request.url.params), response.status_code,
                          response.headers.get("content-type", ""))
        tee = _Tee(response.stream, record, self.log.add)  # type: ignore[arg-type]
        return httpx.Response(response.status_code, headers=response.headers, stream=tee,
                              extensions=response.extensions, request=request)

    def close(self) -> None:
        self.inner.close()
