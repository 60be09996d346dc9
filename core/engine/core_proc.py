"""The engine process: an :class:`LLMEngine` driven over a pipe by the HTTP front-end.

:class:`heron.engine.proc_client.EngineProcClient` starts :func:`run_engine_process` with
multiprocessing's ``spawn`` context and talks to it over one duplex pipe; every message is a
pickled (protocol 5) tuple, the front-end sends lists of them. Front-end to engine: ``("add",
rid, prompt_ids, params, priority, cache_salt, cache_key_extra, lora)``, ``("abort", rid)`` or
``("abort", rid, indices)`` (only those samples: the front-end found their stop strings), ``("call", call_id, name, args)`` (a control call, run between two steps) and ``("shutdown",)``.
Engine to front-end: ``("ready", EngineFacts)`` or ``("failed", error)`` once, then ``("out",
outputs, rejected, snapshot)`` per step (all the step's delta outputs, the requests refused
with their errors, and a throttled :class:`Snapshot` of stats, adapters and sleep state, always
sent when the engine goes idle; outputs carry token ids, the front-end detokenizes them),
``("result", call_id, ok, value, snapshot)`` per control call
and ``("dead", reason)`` before exiting non-zero when the loop fails. The process ends on
``shutdown``, on EOF (the front-end is gone) or when its parent process changes (it was killed).
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from heron.engine.config import EngineConfig
from heron.engine.errors import RequestFailedError, RequestRejectedError

__all__ = ("EngineFacts", "ProcSpec", "ReasoningGateSpec", "Snapshot", "dumps", "portable_error",
           "run_engine_process")

log = logging.getLogger("heron.engine")

STATS_INTERVAL_S = 0.05  # at most 20 stats snapshots a second while busy
IDLE_POLL_S = 1.0  # an idle engine blocks this long on the pipe at a time
PENDING_POLL_S = 0.002  # waiting only for a grammar compile or an adapter load


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


def portable_error(err: BaseException) -> BaseException:
    """``err`` itself when it survives pickling as the same class and message, else a
    ``ValueError`` (a client's fault stays a 400) or ``RuntimeError`` carrying its text."""
    try:
        back = pickle.loads(dumps(err))
        if type(back) is type(err) and str(back) == str(err):
            return err
    except Exception:  # noqa: BLE001 - any failure: fall back to the text
        pass
    cls = ValueError if isinstance(err, ValueError) else RuntimeError
    return cls(f"{type(err).__name__}: {err}")


@dataclass(frozen=True, slots=True)
class ReasoningGateSpec:
    """A request's reasoning gate as it crosses the pipe: the parser class (pickled by
    reference); the engine process binds its own tokenizer (``cls(tokenizer, thinking=...)``)."""

    parser_cls: type
    thinking: bool = True

    def bind(self, tokenizer: Any) -> Any:
        return functools.partial(self.parser_cls, tokenizer, thinking=self.thinking)


@dataclass(slots=True)
class ProcSpec:
    """What the engine process is started with."""

    config: EngineConfig
    lora_modules: list[Any] = field(default_factory=list)  # LoRARequests registered before "ready"
    disabled_plugins: list[str] | None = None
    log_level: int | None = None  # None: leave logging unconfigured
    parent_pid: int = 0


@dataclass(slots=True)
class Snapshot:
    """What the front-end answers locally: ``stats()``, ``list_loras()``, the sleep state."""

    stats: dict[str, Any]
    loras: list[Any]
    sleep_state: Any


@dataclass(slots=True)
class _Named:
    name: str


@dataclass(slots=True)
class EngineFacts:
    """The engine as the server reads it (``client.engine``): what it resolved at start."""

    config: EngineConfig
    tokenizer: Any
    max_model_len: int
    generation_defaults: dict[str, Any]
    vocab_size: int
    eos_token_ids: list[int]
    runner: str
    pooler: Any
    pooling: Any
    hf_config: Any
    dtype: Any
    num_kv_blocks: int
    kv_cache_bytes: int
    linear_kernel: Any
    num_parameters: int
    backend: Any
    sleep_state: Any
    lora: Any  # True when LoRA is enabled, else None (the engine's EngineLoRA stays in its process)
    pid: int
    snapshot: Snapshot

    @classmethod
    def of(cls, engine: Any) -> EngineFacts:
        return cls(engine.config, engine.tokenizer, engine.max_model_len, dict(engine.generation_defaults),
                   engine.vocab_size, list(engine.eos_token_ids), engine.runner, engine.pooler, engine.pooling,
                   engine.checkpoint.hf_config, engine.dtype, engine.num_kv_blocks, engine.kv_cache_bytes,
                   str(engine.linear_kernel), engine.num_parameters,
                   _Named(getattr(engine.backend, "name", type(engine.backend).__name__)), engine.sleep_state,
                   True if engine.lora is not None else None, os.getpid(), _snapshot(engine))


def _snapshot(engine: Any) -> Snapshot:
    return Snapshot(engine.stats(), engine.list_loras(), engine.sleep_state)


def _watch_parent(parent_pid: int) -> None:
    """Exit when the front-end process is gone (re-parented), even in the middle of a step."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def _set_up(spec: ProcSpec) -> None:
    """Logging, CPU affinity and threads, hook plugins, the parent watch: before the engine exists."""
    if spec.log_level is not None:
        logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s[engine]: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the front-end stops us cleanly
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack to stderr
    if spec.parent_pid:
        threading.Thread(target=_watch_parent, args=(spec.parent_pid,), name="heron-parent-watch", daemon=True).start()
    config = spec.config
    if config.cpu_affinity:
        os.sched_setaffinity(0, config.cpu_affinity)
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    from heron.plugins import plugin_manager

    plugin_manager(disabled=spec.disabled_plugins)


def run_engine_process(conn: Connection, spec: ProcSpec) -> None:
    """The engine process's entry point: build the engine, say "ready", serve until told to stop."""
    _set_up(spec)
    try:
        from heron.engine.engine import LLMEngine

        engine = LLMEngine(spec.config)
        for lora in spec.lora_modules:  # --lora-modules: a bad adapter stops the start (LoRAError)
            engine.add_lora(lora)
        facts = EngineFacts.of(engine)
    except BaseException as err:  # noqa: BLE001 - reported to the front-end, then exit 1
        log.exception("the engine failed to start")
        conn.send_bytes(dumps(("failed", portable_error(err))))
        sys.exit(1)
    conn.send_bytes(dumps(("ready", facts)))
    core = _EngineCore(engine, conn)
    try:
        core.run()
    except BaseException as err:  # noqa: BLE001 - any failure here kills the engine; report it
        log.exception("engine loop failed")
        try:
            conn.send_bytes(dumps(("dead", f"{type(err).__name__}: {err}")))
        except OSError:
            pass
        sys.exit(1)


class _EngineCore:
    """The loop: drain the pipe (blocking only when idle), step, send the step's outputs."""

    def __init__(self, engine: Any, conn: Connection) -> None:
        from heron.engine.profiler import EngineProfiler

        self.engine, self.conn = engine, conn
        self.profiler = EngineProfiler()
        self.compiling: list[tuple[Future, tuple]] = []  # adds waiting for their grammar
        self.loading: list[tuple[Future, int, Any]] = []  # add_lora calls waiting for the adapter
        self.rejected: list[tuple[str, BaseException]] = []
        self.last_stats = 0.0
        self.idle_reported = True  # the front-end has a snapshot of the engine idle

    def run(self) -> None:
        engine = self.engine
        while self._drain(self._poll_timeout()):
            self._settle_pending()
            stepping = not engine.sleep_state.asleep and engine.has_unfinished()
            outs = engine.step() if stepping else []
            idle = not engine.has_unfinished()
            if outs or self.rejected or (idle and not self.idle_reported):  # idle: also after an abort
                self._send_outputs(outs, idle=idle)
            self.idle_reported = idle

    def _poll_timeout(self) -> float:
        if not self.engine.sleep_state.asleep and self.engine.has_unfinished():
            return 0.0
        return PENDING_POLL_S if self.compiling or self.loading else IDLE_POLL_S

    def _send_outputs(self, outs: list[Any], idle: bool = False) -> None:
        now = time.monotonic()
        snap = None
        if idle or now - self.last_stats >= STATS_INTERVAL_S:
            snap, self.last_stats = _snapshot(self.engine), now
        rejected, self.rejected = self.rejected, []
        self.conn.send_bytes(dumps(("out", outs, rejected, snap)))

    def _drain(self, timeout: float) -> bool:
        """Handle every waiting message batch; False on shutdown or EOF (the front-end is gone)."""
        while self.conn.poll(timeout):
            timeout = 0.0
            try:
                batch = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                return False
            for msg in batch:
                if not self._handle(msg):
                    return False
        return True

    def _handle(self, msg: tuple) -> bool:
        kind = msg[0]
        if kind == "add":
            self._add(msg[1:])
        elif kind == "abort":
            self._abort(msg[1], msg[2] if len(msg) > 2 else None)
        elif kind == "call":
            self._call(*msg[1:])
        elif kind == "shutdown":
            return False
        return True

    # -- requests ---------------------------------------------------------------------------

    def _add(self, args: tuple) -> None:
        params = args[1]
        gate = getattr(params, "reasoning_gate", None)
        if isinstance(gate, ReasoningGateSpec):
            params.reasoning_gate = gate.bind(self.engine.tokenizer)
        structured = getattr(params, "structured_outputs", None)
        if structured is not None:  # compile off the loop; the add finds it in the grammar cache
            future = self.engine.grammar.compile_async(structured)
            if not future.done():
                self.compiling.append((future, args))
                return
        self._admit(*args)

    def _admit(self, rid: str, ids: list[int], params: Any, priority: int, salt: str | None, extra: str | None,
               lora: Any) -> None:
        try:
            self.engine.add_request(rid, None, params, prompt_token_ids=ids, priority=priority, cache_salt=salt,
                                    cache_key_extra=extra, **({"lora_request": lora} if lora is not None else {}))
        except ValueError as err:  # bad request: that stream fails, the engine goes on
            error = err if isinstance(err, RequestRejectedError) else RequestRejectedError(str(err))  # as AsyncEngine
            self.rejected.append((rid, portable_error(error)))
        except Exception as err:  # noqa: BLE001 - e.g. a reasoning-gate factory that raises
            log.exception("adding request %s failed", rid)
            self.rejected.append((rid, RequestFailedError(f"request {rid!r} failed to start: "
                                                          f"{type(err).__name__}: {err}")))

    def _abort(self, rid: str, indices: list[int] | None = None) -> None:
        """Stop ``rid`` (``indices``: only those samples, whose stop strings the front-end found)."""
        before = len(self.compiling)
        if indices is None:
            self.compiling = [(f, a) for f, a in self.compiling if a[0] != rid]
        if len(self.compiling) == before:
            try:
                self.engine.abort(rid, indices)
            except Exception:  # noqa: BLE001 - the request is gone either way
                log.exception("aborting request %s failed", rid)

    def _settle_pending(self) -> None:
        if self.compiling:
            ready = [(f, a) for f, a in self.compiling if f.done()]
            self.compiling = [(f, a) for f, a in self.compiling if not f.done()]
            for _, args in ready:
                self._admit(*args)  # a failed compile raises StructuredOutputError again: rejected
        if self.loading:
            done = [item for item in self.loading if item[0].done()]
            self.loading = [item for item in self.loading if not item[0].done()]
            for future, call_id, req in done:
                self._reply(call_id, lambda f=future, r=req: self.engine.add_lora(r, f.result()))

    # -- control calls ----------------------------------------------------------------------

    def _call(self, call_id: int, name: str, args: tuple) -> None:
        engine = self.engine
        if name == "add_lora" and engine.lora is not None and engine.lora.manager.get(args[0].lora_name) is None:
            future: Future = Future()  # read the adapter off the loop; register it between two steps

            def load() -> None:
                try:
                    future.set_result(engine.lora.load(args[0]))
                except BaseException as err:  # noqa: BLE001 - handed to the caller
                    future.set_exception(err)

            threading.Thread(target=load, name="heron-lora-load", daemon=True).start()
            self.loading.append((future, call_id, args[0]))
            return
        self._reply(call_id, lambda: getattr(self, f"_op_{name}")(*args))

    def _reply(self, call_id: int, fn: Any) -> None:
        try:
            value, ok = fn(), True
        except Exception as err:  # noqa: BLE001 - handed to the caller
            value, ok = portable_error(err), False
        self.conn.send_bytes(dumps(("result", call_id, ok, value, _snapshot(self.engine))))

    def _op_add_lora(self, req: Any) -> None:
        self.engine.add_lora(req)

    def _op_remove_lora(self, name: str) -> bool:
        return self.engine.remove_lora(name)

    def _op_reset_prefix_cache(self) -> int:
        return self.engine.reset_prefix_cache()

    def _op_sleep(self, level: int, mode: str) -> None:
        from heron.engine.sleep import sleep_engine

        if mode == "abort":
            outs = [out for rid in list(self.engine.requests) if (out := self.engine.abort(rid)) is not None]
            if outs:
                self._send_outputs(outs)
        sleep_engine(self.engine, level)

    def _op_wake_up(self, tags: list[str] | None) -> None:
        from heron.engine.sleep import wake_engine

        wake_engine(self.engine, tags)

    def _op_start_profile(self, directory: str) -> None:
        self.profiler.start(directory)

    def _op_stop_profile(self) -> list[Any]:
        return self.profiler.stop()
