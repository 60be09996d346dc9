"""Launching tensor-parallel ranks and joining them into one ``torch.distributed`` group.

Layout: ``tensor_parallel_size`` ranks over ``nnodes`` machines, ``k = tp / nnodes`` each; node
``n`` hosts ranks ``[n*k, (n+1)*k)``. On node 0, rank 0 is the engine and ranks ``1..k-1`` are
worker processes it spawns (multiprocessing "spawn"); every other node runs
:func:`serve_headless`, which spawns that node's ranks and returns non-zero if one fails.
Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` set)
torchrun has started every rank already: nothing is spawned and each process joins with ``env://``.

Rendezvous is torch's own: rank 0 hosts a :class:`torch.distributed.TCPStore` (on a free port
when every rank is on this machine, else on ``--master-port``), the others connect to it, and
all call ``init_process_group`` on that store (gloo on CPU, NCCL on CUDA). While waiting for the
others, rank 0 watches its local workers so a crash at start-up fails fast instead of waiting
out the timeout. Besides the default group (the model's collectives, with a collective timeout)
every rank joins a gloo group with a long timeout: the channel rank 0 sends step plans and
control calls on, where idle workers may wait for hours.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ("Layout", "backend_for", "collective_timeout", "device_for", "join_group", "layout_of",
           "open_store", "serve_headless", "torchrun_env")

log = logging.getLogger("heron.distributed")

#: seconds a model collective may wait for the other ranks before the step fails
#: (``HERON_TP_TIMEOUT_S``); a dead local worker is noticed before each step regardless
_TIMEOUT_S = 300.0
#: seconds ranks wait for each other at start-up (``HERON_TP_START_TIMEOUT_S``)
_START_TIMEOUT_S = 600.0
#: how long idle workers wait for the next command
_IDLE_TIMEOUT = datetime.timedelta(days=365)
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def collective_timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("HERON_TP_TIMEOUT_S", _TIMEOUT_S)))


def _start_timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("HERON_TP_START_TIMEOUT_S", _START_TIMEOUT_S)))


def torchrun_env() -> dict[str, int | str] | None:
    """torchrun's variables (rank, world_size, local_rank, master_addr, master_port), or None."""
    if not all(v in os.environ for v in _TORCHRUN_VARS):
        return None
    return {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "master_addr": os.environ["MASTER_ADDR"],
            "master_port": int(os.environ["MASTER_PORT"])}


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the ranks of one tensor-parallel engine run."""

    world: int  # tensor_parallel_size
    nnodes: int
    node_rank: int
    per_node: int  # ranks on each machine
    torchrun: bool  # torchrun started every rank (nothing to spawn)
    rank: int = 0  # this process's rank under torchrun (0 otherwise)

    @property
    def node_ranks(self) -> range:
        """The ranks this machine hosts."""
        return range(self.node_rank * self.per_node, (self.node_rank + 1) * self.per_node)

    @property
    def local_workers(self) -> list[int]:
        """The ranks this process spawns (node 0 without torchrun: all of its ranks but 0)."""
        if self.torchrun:
            return []
        return [r for r in self.node_ranks if r != 0]

    @property
    def single_node(self) -> bool:
        return self.nnodes == 1 and not self.torchrun


def layout_of(config: Any) -> Layout:
    """The layout the config (``tensor_parallel_size``, ``nnodes``, ``node_rank``) or torchrun asks for.

    Raises:
        ValueError: sizes that do not fit (a size below 1, ranks that do not divide over the
            machines, a node rank outside them, torchrun's world size differing from the size).
    """
    tp, nnodes, node = int(config.tensor_parallel_size), int(config.nnodes), int(config.node_rank)
    if tp < 1 or nnodes < 1:
        raise ValueError(f"tensor_parallel_size ({tp}) and nnodes ({nnodes}) must be at least 1.")
    env = torchrun_env() if tp > 1 else None
    if env is not None:
        if env["world_size"] != tp:
            raise ValueError(f"torchrun started {env['world_size']} processes but --tensor-parallel-size is {tp}; "
                             "make them equal (torchrun --nproc-per-node x --nnodes = tensor parallel size).")
        return Layout(tp, nnodes, node, max(1, tp // nnodes), True, int(env["rank"]))
    if tp % nnodes:
        raise ValueError(f"--tensor-parallel-size {tp} does not divide over --nnodes {nnodes}: each machine must "
                         "host the same number of ranks.")
    if not 0 <= node < nnodes:
        raise ValueError(f"--node-rank {node} is outside 0..{nnodes - 1} (--nnodes {nnodes}).")
    return Layout(tp, nnodes, node, tp // nnodes, False)


def device_for(device: torch.device, local_rank: int) -> torch.device:
    """The device a rank uses: CUDA ranks of one machine take one GPU each (``cuda:N`` starts at N)."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", (device.index or 0) + local_rank)


def backend_for(device: torch.device) -> str:
    """torch.distributed backend for the model's collectives: NCCL on CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def open_store(layout: Layout, addr: str, port: int) -> dist.TCPStore:
    """Rank 0's rendezvous store: a free port when every rank is on this machine, else ``port``."""
    host = "127.0.0.1" if layout.single_node else addr
    return dist.TCPStore(host, 0 if layout.single_node else port, layout.world, is_master=True,
                         timeout=_start_timeout(), wait_for_workers=False)


def _wait_for_ranks(store: dist.TCPStore, world: int, watch: Any) -> None:
    """Rank 0: wait until every other rank has reached the store, calling ``watch()`` (raises when a
    local worker died) meanwhile."""
    keys = [f"heron/ready/{r}" for r in range(1, world)]
    deadline = time.monotonic() + _start_timeout().total_seconds()
    while not store.check(keys):
        watch()
        if time.monotonic() > deadline:
            missing = [k.rsplit("/", 1)[1] for k in keys if not store.check([k])]
            raise TimeoutError(f"tensor-parallel rank(s) {', '.join(missing)} did not join within "
                               f"{_start_timeout().total_seconds():.0f} s; start the other nodes "
                               "(heron serve ... --node-rank N --headless) with the same --master-addr/--master-port.")
        time.sleep(0.05)


def join_group(rank: int, world: int, device: torch.device, *, store: dist.TCPStore | None = None,
               addr: str = "127.0.0.1", port: int = 0, watch: Any = None) -> Any:
    """Join the tensor-parallel group as ``rank``; returns the gloo command group.

    Rank 0 passes its :func:`open_store` (and ``watch``); other ranks connect to ``addr:port``;
    with neither store nor port (torchrun) the group is joined with ``env://``.
    """
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if store is None and port == 0:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=collective_timeout())
    else:
        if store is None:
            store = dist.TCPStore(addr, port, world, is_master=False, timeout=_start_timeout())
            store.set(f"heron/ready/{rank}", "1")
        else:
            _wait_for_ranks(store, world, watch or (lambda: None))
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=collective_timeout())
    return dist.new_group(backend="gloo", timeout=_IDLE_TIMEOUT)


def serve_headless(settings: Any) -> int:
    """Run this machine's tensor-parallel ranks without an HTTP server (``heron serve --headless``,
    or any ``--node-rank`` > 0); returns when rank 0 stops them: 0, or 1 when a rank failed."""
    from heron.distributed.spawn import run_node
    from heron.server.engine_client import engine_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_node(engine_config(settings))
    except ValueError as err:
        log.error("%s", err)
        return 2
