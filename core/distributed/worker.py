"""A tensor-parallel worker: one rank other than 0, holding its shard of the model and KV pool.

The worker joins the group, takes rank 0's engine settings (dtype, block size, ...), builds its
shard through the engine's own loader (:func:`heron.engine.setup.load_model`, which reads
``tp_rank``/``tp_size`` from the group), sizes its KV pool to the number of blocks every rank can
hold, then loops: run each step plan rank 0 broadcasts (the same :func:`run_plan` as rank 0, so
the collectives match; only rank 0 samples), answer control calls (sleep, wake-up, profiling,
LoRA load and unload: with ``--enable-lora`` each rank keeps its own slice of every adapter under
rank 0's uid, in the slots each step plan names), stop when told. Any failure ends the process with a non-zero status, which rank 0 sees at its
next step.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from heron.distributed.launch import device_for, join_group
from heron.distributed.protocol import CONTROL, STEP, STOP, gather_results, recv_command
from heron.distributed.spawn import WorkerSpec

__all__ = ("Worker", "worker_main")

log = logging.getLogger("heron.distributed")


def _watch_parent(parent_pid: int) -> None:
    """Exit at once when the process that started this one is gone (it may have been SIGKILLed)."""
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="heron-parent-watch", daemon=True).start()


def worker_main(spec: WorkerSpec, exit_process: bool = True) -> int:
    """Entry point of a worker process: join, load, serve until told to stop; 0 on a clean stop."""
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s [tp rank {spec.rank}] %(name)s: %(message)s")
    if spec.ignore_signals:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if spec.parent_pid > 1:
        _watch_parent(spec.parent_pid)
    torch.set_num_threads(spec.threads)
    code = 0
    try:
        Worker(spec).serve()
    except BaseException:  # noqa: BLE001 - whatever it was, this rank is done; rank 0 sees it
        log.exception("tensor-parallel rank %d failed", spec.rank)
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if exit_process:
        sys.exit(code)  # the process's exit status
    return code


class Worker:
    """One rank's model shard and KV pool, driven by rank 0's commands."""

    def __init__(self, spec: WorkerSpec) -> None:
        from heron.engine.parallel import agree_on_model, min_over_ranks, receive_setup
        from heron.engine.setup import load_model, resolve_device, size_kv_pool
        from heron.loader import load_checkpoint

        self.rank = spec.rank
        self.device = device_for(resolve_device(spec.config.device), spec.local_rank)
        self.group = join_group(spec.rank, spec.world, self.device, addr=spec.addr, port=spec.port)
        self.config, self.dtype = receive_setup(spec.config, self.group)
        self.checkpoint = load_checkpoint(self.config.model, quantization=self.config.quantization)
        loaded = load_model(self.checkpoint, self.config, dtype=self.dtype, device=self.device)
        agree_on_model(loaded, self.group)
        self.model, self.backend, self.backend_cls = loaded.model, loaded.backend, loaded.backend_cls
        pool = size_kv_pool(loaded, self.checkpoint, self.config, dtype=self.dtype, device=self.device,
                            threads=spec.threads, agree=lambda n: min_over_ranks(n, self.group))
        self.num_kv_blocks, self.kv_cache_bytes = pool.num_blocks, pool.nbytes
        self.kv_released = self.weights_released = False
        self.profiler: Any = None
        self.lora: Any = None  # heron.lora.LoRAManager over this rank's shard (--enable-lora)
        if self.config.enable_lora:
            from heron.lora import LoRAManager

            self.lora = LoRAManager(self.model, max_loras=self.config.max_loras,
                                    max_lora_rank=self.config.max_lora_rank, max_cpu_loras=self.config.max_cpu_loras,
                                    dtype=self.dtype, device=self.device)
        log.info("rank %d ready: %d KV blocks", self.rank, self.num_kv_blocks)

    def serve(self) -> None:
        """Run commands until STOP."""
        from heron.engine.model_runner import run_plan

        bs = self.config.block_size
        while True:
            cmd, arg = recv_command(self.group)
            if cmd == STEP:
                run_plan(self.model, self.backend, arg.to(self.device), bs, self.lora)
            elif cmd == CONTROL:
                name, kwargs = arg
                try:
                    result: Any = getattr(self, f"_do_{name}")(**kwargs)
                except Exception as err:  # noqa: BLE001 - reported to rank 0, which raises it
                    log.exception("control call %s failed", name)
                    result = _Failure(f"{type(err).__name__}: {err}")
                gather_results(result, self.group)
            elif cmd == STOP:
                log.info("rank %d stopping", self.rank)
                return

    # -- control calls (rank 0 calls them on every rank; each returns what rank 0 combines) --

    def _do_ping(self) -> int:
        return self.rank

    def _do_sleep(self, level: int) -> dict[str, int]:
        from heron.engine.config import release_free_memory
        from heron.engine.sleep import release_weights
        from heron.layers import attention_layers

        freed = {"kv_bytes": 0, "weight_bytes": 0}
        if not self.kv_released:
            for layer in attention_layers(self.model):
                layer.kv_cache = None
            self.kv_released, freed["kv_bytes"] = True, self.kv_cache_bytes
        if level == 2 and not self.weights_released:
            freed["weight_bytes"] = release_weights(self.model)
            self.weights_released = True
        release_free_memory()
        return freed

    def _do_wake_up(self, tags: list[str]) -> bool:
        from heron.engine.sleep import restore_weights
        from heron.layers import allocate_kv_caches

        if "weights" in tags and self.weights_released:
            restore_weights(self)
            self.weights_released = False
        if "kv_cache" in tags and self.kv_released:
            allocate_kv_caches(self.model, self.backend_cls, self.num_kv_blocks, self.config.block_size,
                               self.dtype, self.device)
            self.kv_released = False
        return True

    def _do_lora_add(self, request: Any, uid: int) -> bool:
        """Read ``request``'s adapter folder (this rank's slice) and register it under rank 0's ``uid``."""
        if self.lora is None:
            raise RuntimeError("LoRA is not enabled on this rank.")
        self.lora.register(self.lora.load(request), uid=uid)
        return True

    def _do_lora_remove(self, lora_name: str) -> bool:
        return self.lora is not None and self.lora.remove(lora_name)

    def _do_start_profile(self, directory: str) -> bool:
        from heron.engine.profiler import EngineProfiler

        self.profiler = EngineProfiler(name=f"heron-engine.rank{self.rank}", drive_ranks=False)
        self.profiler.start(directory)
        return True

    def _do_stop_profile(self) -> list[Path]:
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            return []
        return profiler.stop()


class _Failure(str):
    """A control call's error on a worker (a str subclass: it pickles as plainly as a string)."""
