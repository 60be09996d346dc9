"""``memory``: the built-in response store, a bounded in-process map of id -> JSON text.

Bounded three ways, from the server settings: ``response_store_max_entries`` records,
``response_store_max_bytes`` of JSON in total and ``response_store_max_age`` seconds since each
record's last put. The oldest put is evicted first; expired records are never returned and are
dropped lazily. Records are kept as JSON text, so what ``get`` returns never aliases what ``put``
received. Nothing survives a restart: use a persistent third-party store for that.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from heron.interfaces.response_store import ResponseStore, StoredResponse

__all__ = ("MemoryResponseStore",)

log = logging.getLogger(__name__)


class _Entry(NamedTuple):
    text: str  # the record's to_json()
    nbytes: int  # len(text.encode())
    stored_at: float  # clock() at put


class MemoryResponseStore(ResponseStore):
    """Bounded in-memory store (entries, bytes, age); oldest evicted first; lost on restart.

    Every operation is synchronous inside its coroutine (no await while the map changes), so
    concurrent requests on the event loop cannot interleave a mutation. Each operation is O(1)
    apart from evicting old records.

    Args:
        settings: the server settings (``response_store_max_entries``, ``response_store_max_bytes``,
            ``response_store_max_age``).
        clock: returns the current time in seconds (tests inject a fake one).
    """

    def __init__(self, settings: Any, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings)
        self.max_entries = int(settings.response_store_max_entries)
        self.max_bytes = int(settings.response_store_max_bytes)
        self.max_age = float(settings.response_store_max_age)
        for flag, value in (("entries", self.max_entries), ("bytes", self.max_bytes), ("age", self.max_age)):
            if value <= 0:
                raise ValueError(f"--response-store-max-{flag} must be positive, got {value}")
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest put first
        self._bytes = 0

    def __len__(self) -> int:
        """Records held now (expired ones not yet dropped included)."""
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        """JSON bytes held now, summed over records."""
        return self._bytes

    async def put(self, record: StoredResponse) -> None:
        """Store ``record`` (replacing one with its id), then evict the oldest until within bounds."""
        text = record.to_json()
        nbytes = len(text.encode())
        now = self._clock()
        self._pop(record.id)  # a replaced record counts as new: it moves to the young end
        self._drop_expired(now)
        if nbytes > self.max_bytes:
            log.warning("Response %s is %d bytes as JSON, over --response-store-max-bytes (%d); it is not "
                        "stored, so GET and previous_response_id will not find it.", record.id, nbytes,
                        self.max_bytes)
            return
        while self._entries and (len(self._entries) >= self.max_entries or self._bytes + nbytes > self.max_bytes):
            self._pop(next(iter(self._entries)))
        self._entries[record.id] = _Entry(text, nbytes, now)
        self._bytes += nbytes

    async def get(self, response_id: str) -> StoredResponse | None:
        """A fresh copy of the record, or ``None`` when unknown, evicted or expired."""
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        if self._expired(entry, self._clock()):
            self._pop(response_id)
            return None
        return StoredResponse.from_json(entry.text)

    async def delete(self, response_id: str) -> bool:
        """Remove the record; ``True`` when it was there and not expired."""
        entry = self._pop(response_id)
        return entry is not None and not self._expired(entry, self._clock())

    async def close(self) -> None:
        """Forget everything (nothing is persisted)."""
        self._entries.clear()
        self._bytes = 0

    def _expired(self, entry: _Entry, now: float) -> bool:
        return now - entry.stored_at > self.max_age

    def _drop_expired(self, now: float) -> None:
        # puts are in time order, so expired records sit at the old end
        while self._entries:
            oldest = next(iter(self._entries))
            if not self._expired(self._entries[oldest], now):
                break
            self._pop(oldest)

    def _pop(self, response_id: str) -> _Entry | None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._bytes -= entry.nbytes
        return entry
