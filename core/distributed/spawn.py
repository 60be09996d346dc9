"""Worker processes of a tensor-parallel engine: spawning them and supervising a headless node.

Workers are started with multiprocessing's "spawn" context (a fresh interpreter: no forked
threads or torch state) as daemon processes, so they end with the process that started them;
each also watches its parent and exits when it is gone (a SIGKILLed engine runs no clean-up).
:func:`run_node` is a headless machine's main loop: spawn this node's ranks, wait, and report
whether every one of them ended cleanly.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from heron.distributed.launch import Layout, layout_of

__all__ = ("WorkerSpec", "run_node", "spawn_workers", "stop_processes")

log = logging.getLogger("heron.distributed")


@dataclass(slots=True)
class WorkerSpec:
    """What a worker process needs to join the group and build its shard of the model."""

    config: Any  # heron.engine.EngineConfig (this machine's: its model path)
    rank: int
    world: int
    local_rank: int
    addr: str
    port: int  # 0: torchrun's env:// rendezvous
    parent_pid: int
    threads: int
    #: ignore SIGINT/SIGTERM: node 0's workers end when the engine says so (or dies), so a signal
    #: sent to the whole process group (Ctrl-C, systemd, ``timeout``) leaves them serving the drain
    ignore_signals: bool = False


def threads_per_rank(config: Any, ranks_here: int) -> int:
    """Torch threads of one rank: the engine's threads (``num_threads``, else the physical cores) shared by
    this machine's ranks, so that together they do not oversubscribe the cores."""
    from heron.engine.config import physical_cores

    return max(1, (config.num_threads or physical_cores()) // max(1, ranks_here))


def spawn_workers(config: Any, layout: Layout, addr: str, port: int) -> list[tuple[int, mp.process.BaseProcess]]:
    """Start a process for each of ``layout.local_workers`` (or, headless, every rank of the node)."""
    from heron.distributed.worker import worker_main

    ranks = layout.local_workers if layout.node_rank == 0 else list(layout.node_ranks)
    threads = threads_per_rank(config, layout.per_node)
    ctx = mp.get_context("spawn")
    procs = []
    for rank in ranks:
        spec = WorkerSpec(config, rank, layout.world, rank - layout.node_ranks.start, addr, port, os.getpid(), threads,
                          ignore_signals=layout.node_rank == 0)
        proc = ctx.Process(target=worker_main, args=(spec,), name=f"heron-tp-rank{rank}", daemon=True)
        proc.start()
        procs.append((rank, proc))
    return procs


def stop_processes(procs: list[tuple[int, mp.process.BaseProcess]], grace_s: float = 10.0) -> None:
    """Wait up to ``grace_s`` for ``procs`` to exit, then kill the rest (they hold nothing to save)."""
    deadline = time.monotonic() + grace_s
    for _, proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for _, proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)


def run_node(config: Any) -> int:
    """Run this machine's ranks until rank 0 stops them; 0 when all ended cleanly, else 1.

    Raises:
        ValueError: the layout does not fit, or this is node 0 (it runs the engine: start it
            without ``--headless``).
    """
    layout = layout_of(config)
    if layout.torchrun:
        if layout.rank == 0:
            raise ValueError("torchrun's rank 0 runs the engine: start it without --headless.")
        from heron.distributed.worker import worker_main

        spec = WorkerSpec(config, layout.rank, layout.world, int(os.environ.get("LOCAL_RANK", "0")), "", 0,
                          os.getppid(), threads_per_rank(config, layout.per_node))
        return worker_main(spec, exit_process=False)
    if layout.world == 1:
        raise ValueError("--headless runs tensor-parallel workers: give --tensor-parallel-size > 1.")
    if layout.node_rank == 0:
        raise ValueError("node 0 runs the engine (rank 0) and the HTTP server: start it without --headless "
                         "(--headless is for --node-rank 1 and up).")
    procs = spawn_workers(config, layout, config.master_addr, config.master_port)
    log.info("node %d: tensor-parallel ranks %s started; waiting for rank 0 at %s:%d", layout.node_rank,
             list(layout.node_ranks), config.master_addr, config.master_port)
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for _, proc in procs:
            if proc.is_alive():
                proc.terminate()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _supervise(procs, lambda: stopping)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _supervise(procs: list[tuple[int, mp.process.BaseProcess]], stopping: Any) -> int:
    """Wait for every process; when one fails, the others are stopped. 0 when all exited with 0."""
    failed = False
    while any(p.is_alive() for _, p in procs):
        for rank, proc in procs:
            if proc.exitcode not in (None, 0) and not failed:
                failed = True
                log.error("tensor-parallel rank %d exited with code %s; stopping this node", rank, proc.exitcode)
                stop_processes(procs, grace_s=5.0)
        time.sleep(0.2)
    codes = [p.exitcode for _, p in procs]
    if stopping() and not failed:
        return 0
    return 0 if all(c == 0 for c in codes) else 1
