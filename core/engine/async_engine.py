"""The engine client the server talks to: the engine loop in a thread, requests as async streams.

``generate()`` returns an async iterator of cumulative :class:`RequestOutput`; when the loop
produces several outputs before the consumer reads, only the latest is kept (it contains the
others). ``abort()`` is synchronous and safe from any thread. An engine failure is recorded in
``error`` and ends every open stream with :class:`EngineDeadError`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

from heron.engine.engine import LLMEngine
from heron.engine.errors import EngineDeadError, RequestRejectedError
from heron.engine.outputs import RequestOutput
from heron.engine.sampling_params import SamplingParams

__all__ = ("AsyncEngine", "EngineDeadError", "RequestRejectedError")

log = logging.getLogger("heron.engine")


class _Stream:
    __slots__ = ("loop", "event", "latest", "error", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.latest: RequestOutput | None = None
        self.error: BaseException | None = None
        self.closed = False

    def _put(self, out: RequestOutput | None, error: BaseException | None) -> None:
        if out is not None:
            self.latest = out
        if error is not None:
            self.error = error
        self.event.set()

    def put(self, out: RequestOutput | None = None, error: BaseException | None = None) -> None:
        """From the engine thread."""
        try:
            self.loop.call_soon_threadsafe(self._put, out, error)
        except RuntimeError:  # the event loop is closed: nobody is listening
            pass


class AsyncEngine:
    """Runs an :class:`LLMEngine` in a background thread and serves async streams."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.generation_defaults = engine.generation_defaults
        self.error: BaseException | None = None
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="heron-engine", daemon=True)
        self._thread.start()

    # -- the server's side ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    @property
    def alive(self) -> bool:
        return self.error is None and self._thread.is_alive()

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        *,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        if self.error is not None:
            raise EngineDeadError(f"the engine stopped: {self.error}")
        stream = _Stream(asyncio.get_running_loop())
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"Request id {request_id!r} is already in use.")
            self._streams[request_id] = stream
        self._inbox.put(("add", (request_id, list(prompt_ids), params, priority, cache_salt)))
        self._wake.set()
        finished = False
        try:
            while True:
                await stream.event.wait()
                stream.event.clear()
                if stream.error is not None:
                    raise stream.error
                out = stream.latest
                if out is None:
                    continue
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    async def compile_grammar(self, constraint: Any) -> Any:
        """Compile a structured-output constraint off the event loop (and off the engine's
        critical path: the engine later finds it in the cache). Raises StructuredOutputError."""
        return await asyncio.get_running_loop().run_in_executor(None, self.engine.compile_grammar, constraint)

    def abort(self, request_id: str) -> None:
        """Stop ``request_id`` and free its blocks (ignored when unknown or already finished)."""
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    # -- the engine thread ------------------------------------------------------------------

    def _stream(self, request_id: str) -> _Stream | None:
        with self._lock:
            return self._streams.get(request_id)

    def _drain(self) -> None:
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                rid, ids, params, priority, salt = arg
                if self._stream(rid) is None:  # the client left before we got to it
                    continue
                try:
                    self.engine.add_request(rid, None, params, prompt_token_ids=ids, priority=priority, cache_salt=salt)
                except ValueError as err:  # bad request: that stream fails, the engine goes on
                    stream = self._stream(rid)
                    if stream is not None:
                        stream.put(error=err if isinstance(err, RequestRejectedError) else RequestRejectedError(str(err)))
            elif kind == "abort":
                self.engine.abort(arg)

    def _loop(self) -> None:
        try:
            while not self._stop:
                self._drain()
                if not self.engine.has_unfinished():
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                for out in self.engine.step():
                    stream = self._stream(out.request_id)
                    if stream is not None:
                        stream.put(out)
                    elif not out.finished:
                        self.engine.abort(out.request_id)
        except BaseException as err:  # noqa: BLE001 - any failure kills the engine; report it
            log.exception("engine loop failed")
            self.error = err
            dead = EngineDeadError(f"the engine stopped: {type(err).__name__}: {err}")
            with self._lock:
                streams = list(self._streams.values())
            for stream in streams:
                stream.put(error=dead)
