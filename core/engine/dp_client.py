"""Data parallelism: N identical engine replicas behind one client with the engine-client API.

:func:`replica_configs` gives each replica a share of the CPUs (whole physical cores first, its
threads pinned to them); :class:`DataParallelClient` routes each request to one replica and fans
control calls out to all. Routing prefers prefix-cache affinity: the prompt's full KV blocks are
hashed as a chain (seeded with what else changes the KV: cache salt, extra cache key, LoRA
adapter) and a bounded LRU map remembers which replica last served each block chain, so requests
sharing a prefix (a long system prompt, the earlier turns of a chat) land where those blocks are
cached. Affinity yields to load: it is used only when the matched prefix covers at least half of
the prompt (a short shared chat template alone does not pin traffic) and the replica holds at
most ``slack`` more open sequences than the least-loaded one; otherwise the least-loaded replica
(lowest index on ties) serves. A dead replica makes the whole client dead (``error``, ``alive``,
``on_failure`` once): the server then exits as it does for one engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from heron.engine.config import EngineConfig
from heron.engine.errors import EngineDeadError
from heron.engine.request_streams import FailureCallback

__all__ = ("DataParallelClient", "replica_configs")

log = logging.getLogger("heron.engine")

_MAX_BLOCKS = 256  # block-chain hashes kept per request: affinity looks at the first 4096 tokens (16-token blocks)
_MAX_PREFIXES = 1 << 16  # LRU bound on remembered block chains (~6 MiB)
_SUMMED_MEAN = frozenset({"kv_cache_usage"})  # a fraction: averaged over replicas, not summed
_SUMMED_MAX = frozenset({"sleep_level"})  # the deepest replica's


def _core_groups(cpus: list[int]) -> list[list[int]]:
    """``cpus`` grouped by physical core (hyper-thread siblings together), in CPU order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            key = ((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip())
        except OSError:  # no topology: every CPU is its own core
            key = ("cpu", str(cpu))
        groups.setdefault(key, []).append(cpu)
    return list(groups.values())


def replica_configs(config: EngineConfig, n: int) -> list[EngineConfig]:
    """``n`` copies of ``config``, each pinned to its own contiguous share of this process's CPUs.

    Whole physical cores are split first (``num_threads`` = the replica's cores, divided among its
    tensor-parallel ranks, which inherit its affinity; hyper-thread siblings come along in
    ``cpu_affinity``); with fewer cores than replicas the logical CPUs are split; with fewer CPUs
    than replicas they are shared round-robin, one thread each (a warning).
    """
    if n < 1:
        raise ValueError(f"--data-parallel-size must be at least 1, got {n}.")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = _core_groups(cpus)
    if len(cores) < n:
        cores = [[cpu] for cpu in cpus]
    if len(cores) < n:
        log.warning("%d data-parallel replicas share %d CPUs: each runs one thread and they compete for cores",
                    n, len(cpus))
        return [dataclasses.replace(config, cpu_affinity=[cpus[i % len(cpus)]], num_threads=1) for i in range(n)]
    out = []
    for i in range(n):  # contiguous and as even as possible: replica i gets cores [i*k/n, (i+1)*k/n)
        share = cores[i * len(cores) // n:(i + 1) * len(cores) // n]
        out.append(dataclasses.replace(config, cpu_affinity=sorted(c for core in share for c in core),
                                       num_threads=max(1, len(share) // max(1, config.tensor_parallel_size))))
    return out


class DataParallelClient(FailureCallback):
    """One engine client over several identical replicas (each an engine client itself).

    Args:
        clients: the replicas' clients (same model and settings); replica 0 answers the facts
            (tokenizer, ``engine``, ``list_loras``, grammar compilation).
        block_size: tokens per KV block (default: replica 0's ``engine.config.block_size``, else 16).
        slack: how many more open sequences the affinity replica may hold than the least-loaded
            one (default: ``max(2, max_num_seqs // 4)``).
        min_match: the fraction of the prompt the cached prefix must cover for affinity to count.
    """

    def __init__(self, clients: list[Any], *, block_size: int | None = None, slack: int | None = None,
                 min_match: float = 0.5) -> None:
        if not clients:
            raise ValueError("A data-parallel client needs at least one replica.")
        self.clients = list(clients)
        first = self.clients[0]
        self.engine = first.engine
        self.tokenizer, self.max_model_len = first.tokenizer, first.max_model_len
        self.generation_defaults = first.generation_defaults
        config = getattr(self.engine, "config", None)
        self.block_size = int(block_size or getattr(config, "block_size", None) or 16)
        self.slack = slack if slack is not None else max(2, int(getattr(config, "max_num_seqs", 64) or 64) // 4)
        self.min_match = min_match
        self._lock = threading.Lock()  # abort() may come from any thread
        self._load = [0] * len(self.clients)  # open sequences this client submitted to each replica
        self._routed = [0] * len(self.clients)  # requests sent to each replica, ever
        self._affinity_hits = 0
        self._owner: dict[str, int] = {}  # open request id -> its replica
        self._prefixes: OrderedDict[int, int] = OrderedDict()  # block-chain hash -> replica that last served it
        self._error: EngineDeadError | None = None
        self._on_failure: Callable[[BaseException], Any] | None = None
        self._failure_reported = False
        for index, client in enumerate(self.clients):
            client.on_failure = lambda err, i=index: self._replica_failed(i, err)

    # -- facts, health ----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int | None:
        first = self.clients[0]
        return getattr(first, "vocab_size", None) or getattr(self.engine, "vocab_size", None)

    @property
    def error(self) -> BaseException | None:
        if self._error is None:
            for index, client in enumerate(self.clients):
                if client.error is not None:
                    self._replica_failed(index, client.error)
                    break
        return self._error

    @property
    def alive(self) -> bool:
        return self.error is None and all(client.alive for client in self.clients)

    def _failure(self) -> BaseException | None:
        return self._error  # not ``error``: that one asks the replicas, which may report again

    def _replica_failed(self, index: int, err: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = EngineDeadError(f"data-parallel replica {index} of {len(self.clients)} stopped: {err}")
        self._report_failure()

    # -- requests ---------------------------------------------------------------------------

    def _block_hashes(self, ids: list[int], key: tuple[Any, ...]) -> list[int]:
        """One chained hash per full block of ``ids`` (at most ``_MAX_BLOCKS``), seeded with ``key``."""
        h, bs, out = hash(key), self.block_size, []
        for start in range(0, min(len(ids) // bs, _MAX_BLOCKS) * bs, bs):
            h = hash((h, tuple(ids[start:start + bs])))
            out.append(h)
        return out

    def _remember(self, hashes: list[int], index: int) -> None:
        """Under the lock: these block chains are now cached on replica ``index``."""
        for h in hashes:
            self._prefixes[h] = index
            self._prefixes.move_to_end(h)
        while len(self._prefixes) > _MAX_PREFIXES:
            self._prefixes.popitem(last=False)

    def _route(self, ids: list[int], hashes: list[int]) -> int:
        """Under the lock: the replica for a prompt whose block chains are ``hashes``."""
        least = min(range(len(self.clients)), key=self._load.__getitem__)  # first minimum: lowest index
        owner, matched = least, 0
        for depth, h in enumerate(hashes, 1):  # chains are remembered together: stop at the first miss
            found = self._prefixes.get(h)
            if found is None:
                break
            owner, matched = found, depth
        if matched and matched * self.block_size >= self.min_match * len(ids) \
                and self._load[owner] - self._load[least] <= self.slack:
            self._affinity_hits += 1
            return owner
        return least

    async def generate(self, prompt_ids: list[int], params: Any, request_id: str, *, priority: int = 0,
                       cache_salt: str | None = None, cache_key_extra: str | None = None,
                       lora_request: Any = None) -> AsyncIterator[Any]:
        """Route the request to one replica and yield its delta outputs (see ``AsyncEngine.generate``).

        Raises:
            EngineDeadError: a replica has stopped. Other errors come from the chosen replica.
        """
        error = self.error
        if error is not None:
            raise EngineDeadError(str(error))
        key = (cache_salt, cache_key_extra, getattr(lora_request, "lora_name", None))
        hashes = self._block_hashes(prompt_ids, key)
        weight = max(1, int(getattr(params, "n", 1) or 1))
        with self._lock:
            if request_id in self._owner:
                raise ValueError(f"Request id {request_id!r} is already in use.")
            index = self._route(prompt_ids, hashes)
            self._remember(hashes, index)
            self._owner[request_id], self._load[index], self._routed[index] = \
                index, self._load[index] + weight, self._routed[index] + 1
        inner = self.clients[index].generate(prompt_ids, params, request_id, priority=priority, cache_salt=cache_salt,
                                             cache_key_extra=cache_key_extra, lora_request=lora_request)
        output: list[int] = []  # the one sample's tokens: their full blocks are cached too
        try:
            async for out in inner:
                samples = getattr(out, "outputs", None)
                if weight == 1 and isinstance(samples, list) and len(samples) == 1:
                    output.extend(getattr(samples[0], "token_ids", None) or ())
                if getattr(out, "finished", False) and len(prompt_ids) + len(output) >= self.block_size:
                    done = self._block_hashes(list(prompt_ids) + output, key)
                    with self._lock:
                        self._remember(done, index)
                yield out
        finally:
            try:
                await inner.aclose()
            finally:
                with self._lock:
                    self._owner.pop(request_id, None)
                    self._load[index] -= weight

    def abort(self, request_id: str) -> None:
        """Stop ``request_id`` on the replica holding it (ignored when unknown or finished)."""
        with self._lock:
            index = self._owner.get(request_id)
        if index is not None:
            self.clients[index].abort(request_id)

    async def compile_grammar(self, constraint: Any) -> Any:
        return await self.clients[0].compile_grammar(constraint)

    # -- control calls: every replica, one combined result ----------------------------------

    async def _all(self, name: str, *args: Any) -> list[Any]:
        """``name(*args)`` on every replica at once; the first failure is raised after all have run."""
        results = await asyncio.gather(*(getattr(c, name)(*args) for c in self.clients), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def add_lora(self, lora_request: Any) -> None:
        await self._all("add_lora", lora_request)

    async def remove_lora(self, name: str) -> bool:
        return any(await self._all("remove_lora", name))

    def list_loras(self) -> list[Any]:
        return self.clients[0].list_loras()

    async def reset_prefix_cache(self) -> int:
        dropped = sum(await self._all("reset_prefix_cache"))
        with self._lock:
            self._prefixes.clear()
        return dropped

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        await self._all("sleep", level, mode)

    async def wake_up(self, tags: list[str] | None = None) -> None:
        await self._all("wake_up", tags)

    @property
    def is_sleeping(self) -> bool:
        """Whether any replica is asleep (requests routed to it would be refused)."""
        return any(client.is_sleeping for client in self.clients)

    async def start_profile(self, directory: str | os.PathLike[str]) -> None:
        await self._all("start_profile", directory)

    async def stop_profile(self) -> list[Path]:
        return sorted({Path(f) for files in await self._all("stop_profile") for f in files})

    # -- stats, shutdown --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Replica stats combined (counters and gauges summed, ``kv_cache_usage`` averaged), plus
        ``replicas`` (each replica's own, with ``num_requests`` routed to it and ``num_open``) and
        ``data_parallel_size``."""
        with self._lock:
            routed, load, hits = list(self._routed), list(self._load), self._affinity_hits
        replicas = [{**client.stats(), "num_requests": routed[i], "num_open": load[i]}
                    for i, client in enumerate(self.clients)]
        return {**_combine(replicas), "replicas": replicas, "data_parallel_size": len(replicas),
                "num_affinity_routed": hits}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Shut every replica down at once (each within ``timeout``)."""
        threads = [threading.Thread(target=c.shutdown, args=(timeout,), name=f"heron-dp-shutdown-{i}", daemon=True)
                   for i, c in enumerate(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 5.0)


def _combine(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    """One stats dict for all replicas: numbers summed (a few averaged or maxed), LoRA names merged."""
    out: dict[str, Any] = {}
    for key, value in replicas[0].items():
        values = [r.get(key) for r in replicas]
        if isinstance(value, bool) or not isinstance(value, int | float):
            out[key] = value
        elif key in _SUMMED_MEAN:
            out[key] = sum(float(v or 0) for v in values) / len(values)
        elif key in _SUMMED_MAX:
            out[key] = max(v or 0 for v in values)
        else:
            out[key] = sum(v or 0 for v in values)
    loras = [r["lora"] for r in replicas if isinstance(r.get("lora"), dict)]
    if loras:
        out["lora"] = {**loras[0], **{part: sorted({n for lora in loras for n in lora.get(part, ())})
                                      for part in ("running", "waiting")}}
    return out
