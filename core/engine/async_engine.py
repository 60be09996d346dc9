"""The engine client the server talks to: the engine loop in a thread, requests as async streams.

``generate()`` returns an async iterator of delta :class:`RequestOutput` s (see
:mod:`heron.engine.outputs`); when the loop produces several before the consumer reads, they are
merged (appended) into one, so nothing is lost and a slow reader costs no per-step copies.
``abort()`` is synchronous and safe from any thread.

Failures, by scope:

- a bad request (``ValueError`` from ``add_request``) ends its stream with
  :class:`RequestRejectedError` (or its subclass :class:`TokenIdError`);
- a failure while handling one request (sampler, detokenizer, grammar matcher, reasoning gate,
  a hook) ends that stream alone with :class:`RequestFailedError`; the loop goes on;
- a failure of the loop itself (e.g. the model's forward) is recorded in ``error``, ends every
  open stream (and every later ``generate()``) with :class:`EngineDeadError`, and calls the
  ``on_failure`` callback once with the exception (``heron serve`` exits non-zero on it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from heron.engine.engine import LLMEngine
from heron.engine.errors import (
    EngineBusyError,
    EngineDeadError,
    RequestFailedError,
    RequestRejectedError,
)
from heron.engine.outputs import RequestOutput
from heron.engine.profiler import EngineProfiler, ProfilerControl
from heron.engine.request_streams import FailureCallback, OutputStream, register_stream
from heron.engine.sampling_params import SamplingParams
from heron.engine.sleep import SleepControl

__all__ = ("AsyncEngine", "EngineBusyError", "EngineDeadError", "RequestFailedError", "RequestRejectedError")

log = logging.getLogger("heron.engine")


class AsyncEngine(FailureCallback, SleepControl, ProfilerControl):
    """Runs an :class:`LLMEngine` in a background thread and serves async streams.

    Args:
        engine: the engine to drive (only this object's thread calls it from now on).
        on_failure: called once, from the engine thread, with the exception that stopped the
            loop (after every open stream has been ended). Can also be set later through the
            ``on_failure`` attribute; setting it after the loop died calls it at once.
        max_open_requests: a bound on requests submitted and not finished (the inbox and the
            scheduler together); past it ``generate`` raises :class:`EngineBusyError`. The server
            admits by sequences before it gets here, so this is a backstop, not the queue policy.
    """

    def __init__(self, engine: LLMEngine, on_failure: Callable[[BaseException], Any] | None = None, *,
                 max_open_requests: int | None = None) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.generation_defaults = engine.generation_defaults
        self.error: BaseException | None = None
        self._on_failure = on_failure
        self._failure_reported = False
        self.max_open_requests = max_open_requests
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, OutputStream] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._sleep_requested = False  # heron.engine.sleep: refuse new requests from the moment sleep() is called
        self._profiler = EngineProfiler()
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
        cache_key_extra: str | None = None,
        lora_request: Any = None,
    ) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its delta outputs until it finishes (through the LoRA adapter
        ``lora_request`` when given; add it first with :meth:`add_lora`, or it is read from disk
        on the engine thread).

        Raises:
            RequestRejectedError: the engine refused the request (a ``ValueError``).
            RequestFailedError: handling this request failed; the engine goes on.
            EngineBusyError: ``max_open_requests`` requests are already open.
            EngineDeadError: the engine loop has stopped.
        """
        stream = OutputStream(asyncio.get_running_loop())
        with self._lock:  # under the lock: a dying loop either sees this stream or we see its error
            if self.error is not None:
                raise EngineDeadError(f"the engine stopped: {self.error}")
            register_stream(self._streams, request_id, stream, max_open_requests=self.max_open_requests,
                            sleeping=self.is_sleeping)
        self._inbox.put(("add", (request_id, list(prompt_ids), params, priority, cache_salt, cache_key_extra,
                                 lora_request)))
        self._wake.set()
        try:
            async for out in stream.outputs(request_id):
                yield out
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not stream.done:
                self.abort(request_id)

    async def compile_grammar(self, constraint: Any) -> Any:
        """Compile a structured-output constraint off the event loop (and off the engine's
        critical path: the engine later finds it in the cache). Raises StructuredOutputError."""
        loop = asyncio.get_running_loop()
        backend = await loop.run_in_executor(None, lambda: self.engine.grammar)  # built once (imports xgrammar)
        # awaited without holding a thread: a slow compile never starves tokenization's workers
        return await backend.acompile(constraint)

    # -- LoRA adapters ----------------------------------------------------------------------

    async def add_lora(self, lora_request: Any) -> None:
        """Read and check the adapter in a worker thread, then register it on the engine thread.

        Raises:
            LoRAError: the adapter is invalid or the name is taken by another path.
            ValueError: LoRA is not enabled.
        """
        lora = self.engine.lora
        if lora is None:
            raise ValueError("LoRA is not enabled; start with --enable-lora.")
        if lora.manager.get(lora_request.lora_name) is None:
            adapter = await asyncio.to_thread(lora.load, lora_request)
        else:
            adapter = None  # already there: add() checks the path and does nothing
        await self._on_engine_thread(lambda: self.engine.add_lora(lora_request, adapter))

    async def remove_lora(self, name: str) -> bool:
        return await self._on_engine_thread(lambda: self.engine.remove_lora(name))

    def list_loras(self) -> list[Any]:
        return self.engine.list_loras()

    async def _on_engine_thread(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` between two steps (it may change what the engine holds) and return its result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        with self._lock:
            if self.error is not None:
                raise EngineDeadError(f"the engine stopped: {self.error}")
        self._inbox.put(("call", (fn, loop, done)))
        self._wake.set()
        return await done

    async def reset_prefix_cache(self) -> int:
        """Forget every cached prefix no request holds (between two steps); returns the blocks dropped."""
        return await self._on_engine_thread(self.engine.reset_prefix_cache)

    def abort(self, request_id: str) -> None:
        """Stop ``request_id`` and free its blocks (ignored when unknown or already finished)."""
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    # -- the engine thread ------------------------------------------------------------------

    def _stream(self, request_id: str) -> OutputStream | None:
        with self._lock:
            return self._streams.get(request_id)

    def _drain(self) -> None:
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                self._add(*arg)
            elif kind == "call":
                self._call(*arg)
            elif kind == "abort":
                try:
                    self.engine.abort(arg)
                except Exception:  # noqa: BLE001 - the request is gone either way
                    log.exception("aborting request %s failed", arg)

    @staticmethod
    def _call(fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, done: asyncio.Future) -> None:
        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        try:
            result, error = fn(), None
        except Exception as err:  # noqa: BLE001 - handed to the caller
            result, error = None, err
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the caller's event loop is gone
            pass

    def _add(self, rid: str, ids: list[int], params: SamplingParams, priority: int, salt: str | None,
             extra: str | None, lora: Any) -> None:
        if self._stream(rid) is None:  # the client left before we got to it
            return
        try:
            self.engine.add_request(rid, None, params, prompt_token_ids=ids, priority=priority, cache_salt=salt,
                                    cache_key_extra=extra, **({"lora_request": lora} if lora is not None else {}))
        except ValueError as err:  # bad request: that stream fails, the engine goes on
            error: BaseException = err if isinstance(err, RequestRejectedError) else RequestRejectedError(str(err))
        except Exception as err:  # noqa: BLE001 - e.g. a reasoning-gate factory that raises
            log.exception("adding request %s failed", rid)
            error = RequestFailedError(f"request {rid!r} failed to start: {type(err).__name__}: {err}")
        else:
            return
        stream = self._stream(rid)
        if stream is not None:
            stream.put(error=error)

    def _loop(self) -> None:
        try:
            while not self._stop:
                self._drain()
                if self._engine_asleep() or not self.engine.has_unfinished():
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                for out in self.engine.step():
                    stream = self._stream(out.request_id)
                    if stream is not None:
                        stream.put(out)
                    elif not out.finished:
                        self.engine.abort(out.request_id)
        except BaseException as err:  # noqa: BLE001 - any failure here kills the engine; report it
            log.exception("engine loop failed")
            dead = EngineDeadError(f"the engine stopped: {type(err).__name__}: {err}")
            with self._lock:
                self.error = err
                streams = list(self._streams.values())
            for stream in streams:
                stream.put(error=dead)
            self._report_failure()

