"""The engine in its own process, behind the same client API as :class:`heron.engine.AsyncEngine`.

:class:`EngineProcClient` spawns :func:`heron.engine.core_proc.run_engine_process` (messages:
see :mod:`heron.engine.core_proc`) and keeps two threads: a sender that batches what the server
submits (adds, aborts, control calls) into one pipe write, and a reader that turns each step's
token outputs into text (:class:`~heron.engine.detokenizer.RequestDetokenizer`: stop strings end
samples here, and the engine is told to stop them), hands them to the request streams (merged
while a consumer is behind, as in ``AsyncEngine``) and settles control calls. ``stats()``, ``list_loras()`` and ``is_sleeping`` read the last snapshot
the engine sent, with no round trip. Errors arrive as the classes the engine raised. When the
process dies (a failed loop, a signal, EOF), ``error`` is set, every open stream and every later
call ends with :class:`EngineDeadError`, and ``on_failure`` is called once.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import dataclasses
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import threading
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import wait
from typing import Any

from heron.engine.config import EngineConfig
from heron.engine.core_proc import (
    EngineFacts,
    ProcSpec,
    ReasoningGateSpec,
    Snapshot,
    dumps,
    run_engine_process,
)
from heron.engine.detokenizer import RequestDetokenizer
from heron.engine.errors import EngineDeadError, RequestFailedError
from heron.engine.outputs import RequestOutput
from heron.engine.proc_control import ProcControl, settle
from heron.engine.request_streams import FailureCallback, OutputStream, register_stream
from heron.engine.sampling_params import SamplingParams

__all__ = ("EngineProcClient",)

log = logging.getLogger("heron.engine")

_LIVE: weakref.WeakSet[EngineProcClient] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # before multiprocessing's own atexit joins (and would wait for) the children
    for client in list(_LIVE):
        client.shutdown(timeout=2.0)


def _deliver(items: list[tuple[OutputStream, Any, BaseException | None]]) -> None:
    for stream, out, error in items:
        stream.deliver(out, error)


def _portable_params(params: Any) -> Any:
    """``params`` as it can cross the pipe: a reasoning gate that does not pickle (the server's
    closures over its tokenizer) becomes its parser class, which the engine binds to its own."""
    gate = getattr(params, "reasoning_gate", None)
    if gate is None or isinstance(gate, ReasoningGateSpec):
        return params
    try:
        pickle.dumps(gate, protocol=5)
        return params
    except Exception:  # noqa: BLE001 - a lambda or local closure
        probe = gate()
        params = copy.copy(params)  # not clone(): its checks want a callable gate
        params.reasoning_gate = ReasoningGateSpec(type(probe), bool(getattr(probe, "thinking", True)))
        return params


class EngineProcClient(FailureCallback, ProcControl):
    """Runs an :class:`LLMEngine` for ``config`` in a spawned process and serves async streams.

    Args:
        config: the engine's settings (its ``cpu_affinity`` and ``num_threads`` apply to the process).
        on_failure: called once with the exception when the engine process dies (also settable later).
        name: the replica's name (the process is ``heron-engine-<name>``).
        max_open_requests: past this many open requests ``generate`` raises :class:`EngineBusyError`.
        lora_modules: LoRARequests to register before the engine says it is ready.
        disabled_plugins: hook plugins the engine process leaves out (``--disable-plugins``).
        wait: block until the engine is ready (else call :meth:`wait_ready` before using it).

    Raises:
        Exception: whatever building the engine raised (same class and message), from :meth:`wait_ready`.
    """

    def __init__(self, config: EngineConfig, on_failure: Callable[[BaseException], Any] | None = None, *,
                 name: str = "0", max_open_requests: int | None = None, lora_modules: list[Any] | tuple = (),
                 disabled_plugins: list[str] | None = None, wait: bool = True) -> None:
        self.name = name
        self.max_open_requests = max_open_requests
        self.error: BaseException | None = None
        self.engine: EngineFacts | None = None
        self._snapshot = Snapshot({}, [], None)
        self._on_failure, self._failure_reported = on_failure, False
        self._streams: dict[str, OutputStream] = {}
        self._calls: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._call_ids = itertools.count()
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._closing = False
        self._dead_reason: str | None = None
        self._sleep_requested = False
        self._grammar: Any = None
        self._grammar_lock = threading.Lock()
        root = logging.getLogger()
        config = dataclasses.replace(config, detokenize=False)  # the reader thread detokenizes
        spec = ProcSpec(config, list(lora_modules), disabled_plugins,
                        root.getEffectiveLevel() if root.handlers else None, os.getpid())
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        # not a daemon: the engine may start tensor-parallel workers of its own; it exits on EOF
        # or when this process is gone, and shutdown() (also at exit) stops it
        self.process = ctx.Process(target=run_engine_process, args=(child_conn, spec), name=f"heron-engine-{name}")
        _LIVE.add(self)
        self.process.start()
        child_conn.close()  # ours only in the child: its death is EOF here
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the engine process is serving; raise what its start-up raised."""
        if self.engine is not None:
            return
        msg: tuple | None = None
        try:
            if self._conn in wait([self._conn, self.process.sentinel]):
                msg = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            pass
        if msg is None or msg[0] != "ready":
            self.shutdown(timeout=5.0)
            if msg is not None and msg[0] == "failed":
                raise msg[1]
            raise EngineDeadError(f"the engine process exited during start-up (exit code {self.process.exitcode}).")
        facts: EngineFacts = msg[1]
        self.engine, self._snapshot = facts, facts.snapshot
        self.tokenizer, self.max_model_len = facts.tokenizer, facts.max_model_len
        self.generation_defaults, self.vocab_size = facts.generation_defaults, facts.vocab_size
        threading.Thread(target=self._send_loop, name=f"heron-engine-{self.name}-send", daemon=True).start()
        threading.Thread(target=self._read_loop, name=f"heron-engine-{self.name}-read", daemon=True).start()

    # -- the server's side ------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.error is None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        return dict(self._snapshot.stats)

    def list_loras(self) -> list[Any]:
        return list(self._snapshot.loras)

    @property
    def is_sleeping(self) -> bool:
        """Asleep, or falling asleep: new requests are refused from the moment ``sleep`` is called."""
        return self._sleep_requested or self._asleep()

    def _asleep(self) -> bool:
        return bool(getattr(self._snapshot.sleep_state, "asleep", False))

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str, *, priority: int = 0,
                       cache_salt: str | None = None, cache_key_extra: str | None = None,
                       lora_request: Any = None) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its delta outputs until it finishes (as ``AsyncEngine.generate``).

        Raises:
            RequestRejectedError: the engine refused the request (a ``ValueError``).
            RequestFailedError: handling this request failed; the engine goes on.
            EngineBusyError: ``max_open_requests`` requests are already open.
            EngineDeadError: the engine process has stopped.
        """
        stream = OutputStream(asyncio.get_running_loop())
        if isinstance(params, SamplingParams):
            stream.detok = RequestDetokenizer(self.tokenizer, prompt_ids, params, self.engine.eos_token_ids)
        with self._lock:  # under the lock: a dying engine either sees this stream or we see its error
            self._check_running()
            register_stream(self._streams, request_id, stream, max_open_requests=self.max_open_requests,
                            sleeping=self.is_sleeping)
        try:
            self._post(("add", request_id, list(prompt_ids), _portable_params(params), priority, cache_salt,
                        cache_key_extra, lora_request))
            async for out in stream.outputs(request_id):
                yield out
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
            if not stream.done:  # refused, dead or finished: nothing to abort
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Stop ``request_id`` and free its blocks (ignored when unknown or already finished)."""
        self._post(("abort", request_id))

    async def compile_grammar(self, constraint: Any) -> Any:
        """Compile a structured-output constraint here (a bad one is a 400 before submission); the
        engine process compiles it again when the request arrives. Raises StructuredOutputError."""
        backend = await asyncio.get_running_loop().run_in_executor(None, self._grammar_backend)
        return await backend.acompile(constraint)

    def _grammar_backend(self) -> Any:
        with self._grammar_lock:
            if self._grammar is None:
                from heron.structured import GrammarBackend

                facts = self.engine
                self._grammar = GrammarBackend(facts.tokenizer, facts.vocab_size, stop_token_ids=facts.eos_token_ids,
                                               limits=facts.config.structured_limits)
            return self._grammar

    def _check_running(self) -> None:
        """Under the lock: raise EngineDeadError once the engine died or was shut down."""
        if self.error is not None:
            raise EngineDeadError(f"the engine stopped: {self.error}")
        if self._closing:
            raise EngineDeadError("the engine was shut down")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the engine process (killed when it does not stop within ``timeout`` seconds)."""
        with self._lock:
            self._closing = True
        _LIVE.discard(self)
        if self.process.is_alive():
            self._post(("shutdown",))
            if self.engine is None:  # still starting: nobody reads the pipe; stop it now
                self.process.terminate()
            self.process.join(timeout)
            if self.process.is_alive():
                log.warning("engine process %s did not stop within %.0f s; killing it", self.name, timeout)
                self.process.kill()
                self.process.join(5.0)
        self._outbox.put(None)
        self._end_everything(EngineDeadError("the engine was shut down"))

    # -- the pipe ---------------------------------------------------------------------------

    def _post(self, msg: tuple) -> None:
        self._outbox.put(msg)

    def _send_loop(self) -> None:
        """Write what was posted, several messages per write when they pile up."""
        while True:
            msg = self._outbox.get()
            batch = []
            while msg is not None:
                batch.append(msg)
                try:
                    msg = self._outbox.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._conn.send_bytes(dumps(batch))
                except (OSError, ValueError):  # the engine is gone: the reader reports it
                    return
            if msg is None:
                return

    def _read_loop(self) -> None:
        conn, sentinel = self._conn, self.process.sentinel
        try:
            while True:
                if conn not in wait([conn, sentinel]):
                    break  # exited with nothing left to read
                self._handle(pickle.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a message we cannot read: treat the engine as dead
            log.exception("engine process %s: unreadable message", self.name)
            self.process.kill()
        self.process.join(5.0)
        code = self.process.exitcode
        why = self._dead_reason or (f"the engine process {self.name} exited" +
                                    (f" (killed by signal {-code})" if code and code < 0 else f" (exit code {code})"))
        self._died(EngineDeadError(why))

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "out":
            _, outs, rejected, snap = msg
            if snap is not None:
                self._snapshot = snap
                self.engine.sleep_state = snap.sleep_state
            self._dispatch(outs, rejected)
        elif kind == "result":
            _, call_id, ok, value, snap = msg
            self._snapshot, self.engine.sleep_state = snap, snap.sleep_state
            with self._lock:
                waiter = self._calls.pop(call_id, None)
            if waiter is not None:
                loop, future = waiter
                self._call_soon(loop, settle, future, ok, value)
        elif kind == "dead":
            self._dead_reason = msg[1]

    def _dispatch(self, outs: list[Any], rejected: list[tuple[str, BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        with self._lock:
            found = [(self._streams.get(out.request_id), out) for out in outs]
            failed = [(stream, error) for rid, error in rejected if (stream := self._streams.get(rid)) is not None]
        for stream, out in found:
            if stream is None:
                if not out.finished:
                    self._post(("abort", out.request_id))  # its consumer left
                continue
            if stream.detok is not None and not self._detokenize(stream, out):
                continue
            by_loop[stream.loop].append((stream, out, None))
        for stream, error in failed:
            by_loop[stream.loop].append((stream, None, error))
        for loop, items in by_loop.items():  # one wake-up per event loop per step
            self._call_soon(loop, _deliver, items)

    def _detokenize(self, stream: OutputStream, out: Any) -> bool:
        """Fill in ``out``'s text; stop in the engine the samples a stop string ended. False: drop ``out``
        (late news of samples that already ended, or the detokenizer failed: the stream then fails)."""
        rid = out.request_id
        try:
            stopped = stream.detok.process(out)
        except Exception as err:  # noqa: BLE001 - that request alone fails
            log.exception("request %s: detokenizing failed", rid)
            self._post(("abort", rid))
            with self._lock:
                self._streams.pop(rid, None)  # later outputs of this request are dropped
            self._call_soon(stream.loop, stream.deliver, None,
                            RequestFailedError(f"request {rid!r} failed: detokenizing failed: {type(err).__name__}: {err}"))
            return False
        if stopped is None:
            return False
        if stopped:
            self._post(("abort", rid) if out.finished else ("abort", rid, stopped))
        return True

    @staticmethod
    def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: nobody is listening
            pass

    def _died(self, err: BaseException) -> None:
        with self._lock:
            if self._closing or self.error is not None:
                return
            self.error = err
        log.error("engine process %s died: %s", self.name, err)
        self._end_everything(EngineDeadError(f"the engine stopped: {err}"))
        self._report_failure()

    def _end_everything(self, dead: EngineDeadError) -> None:
        with self._lock:
            streams, calls = list(self._streams.values()), list(self._calls.values())
            self._calls.clear()
        by_loop: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        for stream in streams:
            by_loop[stream.loop].append((stream, None, dead))
        for loop, items in by_loop.items():
            self._call_soon(loop, _deliver, items)
        for loop, future in calls:
            self._call_soon(loop, settle, future, False, dead)

