"""Rank 0's handle on its tensor-parallel group: publish step plans, make control calls, stop.

Failure handling: before each step rank 0 checks that its local workers are alive; a collective
with a rank that died fails (gloo notices the closed connection at once; otherwise the collective
timeout, ``HERON_TP_TIMEOUT_S``, ends it). Either way the step raises, the group is marked broken
and every later step raises at once, so the engine reports itself dead instead of hanging.
Workers end with the engine: :meth:`RankGroup.shutdown` (also registered with ``atexit``) sends
STOP and reaps them; they are daemon processes and watch their parent in case it is killed.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any

import torch
import torch.distributed as dist

from heron.distributed.launch import Layout, join_group, open_store
from heron.distributed.protocol import gather_results, send_control, send_step, send_stop
from heron.distributed.spawn import spawn_workers, stop_processes, threads_per_rank

__all__ = ("RankGroup", "TensorParallelError", "current_group")

log = logging.getLogger("heron.distributed")

_current: RankGroup | None = None


def current_group() -> RankGroup | None:
    """The running group of this process's engine (one engine per world), or None."""
    return _current


class TensorParallelError(RuntimeError):
    """A rank of the tensor-parallel group failed or is gone; the engine cannot continue."""


class RankGroup:
    """The group as rank 0 sees it: its local worker processes and the command channel."""

    def __init__(self, layout: Layout, procs: list[tuple[int, Any]], cpu_group: Any, threads: int = 1) -> None:
        self.layout = layout
        self.threads = threads  # torch threads of rank 0 (this machine's cores shared by its ranks)
        self.procs = procs
        self.cpu_group = cpu_group
        self.broken: str | None = None
        self._closed = False

    @classmethod
    def start(cls, config: Any, layout: Layout, device: torch.device) -> RankGroup:
        """Spawn the local workers (none under torchrun) and join the group as rank 0."""
        global _current
        if _current is not None:  # one engine per world: an engine that was never shut down goes now
            _current.shutdown()
        if dist.is_initialized():
            raise RuntimeError("a torch.distributed process group is already initialised in this process; "
                               "tensor parallelism needs its own (one engine per process).")
        procs: list[tuple[int, Any]] = []
        try:
            if layout.torchrun:
                cpu_group = join_group(0, layout.world, device)
            else:
                store = open_store(layout, config.master_addr, config.master_port)
                procs = spawn_workers(config, layout, "127.0.0.1" if layout.single_node else config.master_addr,
                                      store.port)
                group = cls(layout, procs, None)
                cpu_group = join_group(0, layout.world, device, store=store, watch=group.check_alive)
        except BaseException:
            stop_processes(procs, grace_s=0.0)
            if dist.is_initialized():
                dist.destroy_process_group()
            raise
        _current = cls(layout, procs, cpu_group, threads_per_rank(config, layout.per_node))
        atexit.register(_current.shutdown)
        log.info("tensor parallel: %d ranks over %d node(s), %d local worker process(es)", layout.world,
                 layout.nnodes, len(procs))
        return _current

    def check_alive(self) -> None:
        """Raise :class:`TensorParallelError` when a local worker has exited (or the group broke)."""
        if self.broken is not None:
            raise TensorParallelError(self.broken)
        for rank, proc in self.procs:
            if proc.exitcode is not None:
                self.broken = (f"tensor-parallel worker rank {rank} exited (code {proc.exitcode}; its log says "
                               "why); the engine cannot continue without it.")
                raise TensorParallelError(self.broken)

    def _guard(self, what: str, fn: Any) -> Any:
        self.check_alive()
        try:
            return fn()
        except Exception as err:
            try:
                self.check_alive()
            except TensorParallelError:
                raise TensorParallelError(self.broken) from err
            self.broken = f"tensor-parallel {what} failed: {type(err).__name__}: {err}"
            raise TensorParallelError(self.broken) from err

    def publish(self, plan: Any) -> None:
        """Broadcast a step plan (rank 0 runs it right after)."""
        self._guard("step broadcast", lambda: send_step(plan, self.cpu_group))

    def guard_forward(self, fn: Any) -> Any:
        """Run rank 0's share of a step, turning a failed collective into :class:`TensorParallelError`."""
        return self._guard("forward", fn)

    def control(self, name: str, **kwargs: Any) -> list[Any]:
        """Run ``name(**kwargs)`` on every worker; their results in rank order (rank 0's slot is None).

        Raises:
            TensorParallelError: a worker's call failed (named with its rank and error).
        """
        def call() -> list[Any]:
            send_control(name, kwargs, self.cpu_group)
            return gather_results(None, self.cpu_group) or []

        results = self._guard(f"control call {name}", call)
        from heron.distributed.worker import _Failure

        failed = [f"rank {r}: {res}" for r, res in enumerate(results) if isinstance(res, _Failure)]
        if failed:
            raise TensorParallelError(f"{name} failed on " + "; ".join(failed))
        return results

    def shutdown(self, kill: bool = False) -> None:
        """Stop every rank (STOP, then reap the local workers) and leave the group; idempotent.

        ``kill``: rank 0 failed mid-way (e.g. during start-up, when the workers are not waiting
        for a command): terminate the local workers at once; remote ones see the group close.
        """
        global _current
        if self._closed:
            return
        self._closed = True
        if kill and self.broken is None:
            self.broken = "the engine stopped"
        if _current is self:
            _current = None
        if self.broken is None and self.cpu_group is not None:
            try:
                self.check_alive()
                send_stop(self.cpu_group)
            except Exception:  # noqa: BLE001 - a rank is gone already: reap the rest
                log.warning("could not tell every tensor-parallel rank to stop", exc_info=True)
        stop_processes(self.procs, grace_s=10.0 if self.broken is None else 0.0)
        self.broken = self.broken or "the tensor-parallel engine was shut down"
        if dist.is_initialized():
            dist.destroy_process_group()
        atexit.unregister(self.shutdown)
