"""The response-store contract: where ``/v1/responses`` keeps the responses sent with ``store: true``.

A store keeps :class:`StoredResponse` records by id: what ``GET /v1/responses/{id}``, its
``input_items`` listing and a later request's ``previous_response_id`` need. Stores are plugins of
the ``heron.response_stores`` entry-point group; the operator picks one with
``--response-store NAME`` (default ``memory``: bounded, in-process, nothing survives a restart).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ("ResponseStore", "StoredResponse")

_FIELDS = ("id", "response", "input_items", "messages", "created_at")


@dataclass(slots=True)
class StoredResponse:
    """One stored response: everything GET, input_items and previous_response_id need; JSON-only fields.

    Attributes:
        id: ``"resp_<hex>"``, made by the server.
        response: the Response object exactly as ``GET /v1/responses/{id}`` returns it.
        input_items: this turn's input items as ItemResource JSON (each has an ``"id"``).
        messages: the whole conversation so far in chat-message form (without instructions), this
            turn's output included: what a continuation re-renders.
        created_at: unix time, seconds.
    """

    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    created_at: float

    def to_json(self) -> str:
        """Compact JSON of all fields (UTF-8 text, no ASCII escaping)."""
        payload = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> StoredResponse:
        """Rebuild a record from :meth:`to_json`'s output.

        Raises:
            ValueError: the text is not JSON or is not an object with exactly the record's fields.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a stored response: expected the fields {list(_FIELDS)}, got {got}")
        return cls(**{name: data[name] for name in _FIELDS})

    def size(self) -> int:
        """Bytes of :meth:`to_json` encoded as UTF-8: what byte limits count."""
        return len(self.to_json().encode())


class ResponseStore(ABC):
    """Where ``/v1/responses`` keeps stored responses.

    Entry-point group ``heron.response_stores``; one is chosen with ``--response-store NAME``
    (default ``"memory"``) and built once per server as ``cls(settings)``. Methods are async and run
    on the server's event loop: a store doing blocking I/O must push it to a thread itself (e.g.
    ``asyncio.to_thread``). A store must be safe under concurrent calls from many requests, and
    what ``get`` returns must not alias what ``put`` received.
    """

    def __init__(self, settings: Any) -> None:
        """Keep ``settings`` (the server's ``ServerSettings``): read your limits from it."""
        self.settings = settings

    @abstractmethod
    async def put(self, record: StoredResponse) -> None:
        """Insert ``record``, or replace the record with the same id."""

    @abstractmethod
    async def get(self, response_id: str) -> StoredResponse | None:
        """The record stored under ``response_id``; ``None`` when unknown, evicted or expired."""

    @abstractmethod
    async def delete(self, response_id: str) -> bool:
        """Remove the record ``response_id``; ``True`` when it was there."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called once at server shutdown: flush and release resources (default: nothing)."""
