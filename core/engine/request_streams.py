"""One open request's stream of delta outputs, shared by the engine clients (thread and process).

The engine side delivers outputs and errors (:meth:`OutputStream.deliver` on the stream's event
loop, or :meth:`OutputStream.put` from any thread); deltas that arrive before the consumer reads
are merged into one, so nothing is lost and a slow reader costs no per-step copies.
:meth:`OutputStream.outputs` is the consumer's side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from heron.engine.errors import EngineBusyError, RequestFailedError
from heron.engine.outputs import RequestOutput, merge_output

__all__ = ("FailureCallback", "OutputStream", "register_stream")

log = logging.getLogger("heron.engine")


class OutputStream:
    __slots__ = ("loop", "event", "pending", "error", "done", "detok")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: the request's detokenizer, when the engine sends token ids only (an engine process)
        self.detok: Any = None
        self.event = asyncio.Event()
        self.pending: RequestOutput | None = None  # deltas not read yet, merged
        self.error: BaseException | None = None
        #: the request ended (finished, failed or refused): nothing is left to abort
        self.done = False

    def deliver(self, out: RequestOutput | None = None, error: BaseException | None = None) -> None:
        """On the stream's event loop."""
        if out is not None:
            self.pending = out if self.pending is None else merge_output(self.pending, out)
        if error is not None and self.error is None:
            self.error = error
        self.event.set()

    def put(self, out: RequestOutput | None = None, error: BaseException | None = None) -> None:
        """From any thread."""
        try:
            self.loop.call_soon_threadsafe(self.deliver, out, error)
        except RuntimeError:  # the event loop is closed: nobody is listening
            pass

    async def outputs(self, request_id: str) -> AsyncIterator[RequestOutput]:
        """Yield the request's merged deltas until it finishes.

        Raises:
            the delivered error (refused, dead engine), or RequestFailedError when the engine ended
            this request alone with an error.
        """
        while True:
            await self.event.wait()
            self.event.clear()
            out, self.pending = self.pending, None
            if out is not None and out.error is None:
                self.done = out.finished
                yield out
                if self.done:
                    return
            if self.error is not None:
                self.done = True
                raise self.error
            if out is not None and out.error is not None:
                self.done = True
                raise RequestFailedError(f"request {request_id!r} failed: {out.error}")


def register_stream(streams: dict[str, Any], request_id: str, stream: OutputStream, *,
                    max_open_requests: int | None, sleeping: bool) -> None:
    """Add ``stream`` under ``request_id`` (call under the client's lock).

    Raises:
        ValueError: the id is in use. EngineBusyError: ``max_open_requests`` are open.
        EngineSleepingError: the engine is asleep.
    """
    from heron.engine.sleep import EngineSleepingError

    if request_id in streams:
        raise ValueError(f"Request id {request_id!r} is already in use.")
    if max_open_requests is not None and len(streams) >= max_open_requests:
        raise EngineBusyError(f"The engine already holds {len(streams)} open requests; retry shortly.")
    if sleeping:
        raise EngineSleepingError("The engine is asleep; POST /wake_up (or call wake_up()) first.")
    streams[request_id] = stream


class FailureCallback:
    """The ``on_failure`` callback of an engine client: called once with the error that stopped the
    engine, and at once when it is set after the engine died. Subclasses hold ``_lock`` (a
    ``threading.Lock``) and ``_on_failure``/``_failure_reported``, and say what stopped them in
    :meth:`_failure`."""

    _on_failure: Callable[[BaseException], Any] | None = None
    _failure_reported: bool = False
    _lock: Any

    def _failure(self) -> BaseException | None:
        return getattr(self, "error", None)

    @property
    def on_failure(self) -> Callable[[BaseException], Any] | None:
        return self._on_failure

    @on_failure.setter
    def on_failure(self, callback: Callable[[BaseException], Any] | None) -> None:
        with self._lock:
            self._on_failure = callback
            self._failure_reported = False  # a new callback hears of a failure, even a past one
        if self._failure() is not None:
            self._report_failure()

    def _report_failure(self) -> None:
        error = self._failure()
        with self._lock:
            callback, done = self._on_failure, self._failure_reported
            if callback is not None and error is not None:
                self._failure_reported = True
        if callback is None or done or error is None:
            return
        try:
            callback(error)
        except Exception:  # noqa: BLE001 - the engine is already dead; do not mask that
            log.exception("the engine's on_failure callback failed")
