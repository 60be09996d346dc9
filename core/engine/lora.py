"""The engine's LoRA adapters: which are registered, which request uses which, removal, stats.

:class:`heron.lora.LoRAManager` owns the weights (parsing, resident slots, the batched layers);
this is the engine's bookkeeping around it. Every registered adapter gets a uid that is never
reused; a request's uid goes into its prefix-cache key, so two adapters (or an adapter and the one
that replaced it under the same name) never share KV blocks. Removing an adapter that unfinished
requests still use hides its name at once and drops its weights once they are done.

Under tensor parallelism (:meth:`EngineLoRA.use_group`) every registration and removal is also a
control call to the other ranks (``lora_add`` / ``lora_remove``: each reads the adapter folder
itself and keeps its own slice under rank 0's uid), and :meth:`EngineLoRA.plan_step` decides the
step's slots here, on rank 0, for the step plan every rank runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from heron.engine.request import Request
from heron.lora import LoRAError, LoRAManager, LoRARequest

__all__ = ("EngineLoRA",)

log = logging.getLogger("heron.engine")


class EngineLoRA:
    """Adapters of one engine (``--enable-lora``)."""

    def __init__(self, model: torch.nn.Module, config: Any, *, dtype: torch.dtype, device: torch.device) -> None:
        if not getattr(model, "supports_lora", True):
            raise ValueError(f"{type(model).__name__} does not support LoRA adapters; start without --enable-lora.")
        if config.max_loras < 1 or config.max_lora_rank < 1:
            raise ValueError("max_loras and max_lora_rank must be at least 1.")
        self.max_loras = config.max_loras
        self.manager = LoRAManager(model, max_loras=config.max_loras, max_lora_rank=config.max_lora_rank,
                                   max_cpu_loras=config.max_cpu_loras, dtype=dtype, device=device)
        self._names: dict[int, str] = {}  # uid -> name, for stats
        self._retired: dict[str, int] = {}  # name -> uid: removed while requests still use it
        self.group: Any = None  # rank 0's heron.distributed.group.RankGroup under tensor parallelism

    def use_group(self, group: Any) -> None:
        """Mirror registrations onto the other ranks of ``group`` (a RankGroup; None: none)."""
        self.group = group

    def load(self, req: LoRARequest) -> Any:
        """Read and check an adapter (disk I/O; any thread). Raises LoRAError."""
        return self.manager.load(req)

    def add(self, req: LoRARequest, adapter: Any = None) -> int:
        """Register ``req`` (loading it unless ``adapter`` is given); its uid. The same name and
        path again is a no-op; the same name from another path is a LoRAError."""
        found = self.manager.get(req.lora_name)
        if found is not None and req.lora_name not in self._retired:
            uid, known = found
            if Path(known.lora_path).resolve() == Path(req.lora_path).resolve():
                return uid
            raise LoRAError(f"A LoRA adapter named {req.lora_name!r} is already loaded from {known.lora_path}; "
                            "unload it first.")
        if req.lora_name in self._retired:
            raise LoRAError(f"The LoRA adapter {req.lora_name!r} was unloaded but requests still use it; "
                            "load it again once they finish.")
        uid = self.manager.register(adapter if adapter is not None else self.manager.load(req))
        self._share(req, uid)
        self._names[uid] = req.lora_name
        log.info("LoRA adapter %r loaded from %s (uid %d)", req.lora_name, req.lora_path, uid)
        return uid

    def remove(self, name: str, requests: dict[str, Request]) -> bool:
        """Unregister ``name``; False when it is not loaded."""
        found = self.manager.get(name)
        if found is None or name in self._retired:
            return False
        uid = found[0]
        if any(r.lora_uid == uid for r in requests.values()):
            self._retired[name] = uid
        else:
            self._drop(name)
        log.info("LoRA adapter %r unloaded", name)
        return True

    def sweep(self, requests: dict[str, Request]) -> None:
        """Drop the weights of removed adapters that no unfinished request uses any more."""
        for name, uid in list(self._retired.items()):
            if not any(r.lora_uid == uid for r in requests.values()):
                self._drop(name)
                del self._retired[name]

    def _share(self, req: LoRARequest, uid: int) -> None:
        """Register ``req`` under ``uid`` on the other ranks too; undone everywhere if a rank fails."""
        if self.group is None:
            return
        from heron.distributed.group import TensorParallelError

        try:
            self.group.control("lora_add", request=req, uid=uid)
        except TensorParallelError as err:
            self._drop(req.lora_name)
            if self.group.broken is not None:
                raise
            raise LoRAError(f"LoRA adapter {req.lora_name!r} could not be loaded on every tensor-parallel rank: "
                            f"{err}") from err

    def _drop(self, name: str) -> None:
        """Forget ``name``'s weights here and on the other ranks."""
        self.manager.remove(name)
        if self.group is not None and self.group.broken is None:
            self.group.control("lora_remove", lora_name=name)

    def uid_for(self, req: LoRARequest) -> int:
        """The uid a request for ``req`` runs with (registering the adapter on first use)."""
        found = self.manager.get(req.lora_name)
        if found is not None and req.lora_name not in self._retired:
            return found[0]
        return self.add(req)

    def list(self) -> list[LoRARequest]:
        return [r for r in self.manager.list() if r.lora_name not in self._retired]

    def plan_step(self, sched: Any) -> tuple[list[int], list[int]]:
        """Per scheduled item, (its adapter's uid, the slot it sits in), -1 for the base model; two
        empty lists when no item uses an adapter. Loads the step's adapters into their slots here."""
        uids = [item.seq.request.lora_uid for item in sched.scheduled]
        if all(uid is None for uid in uids):
            return [], []
        slots = self.manager.assign(uids)
        return [-1 if uid is None else uid for uid in uids], slots

    def stats(self, running: list[Any], waiting: list[Any]) -> dict[str, Any]:
        """vLLM's ``lora_requests_info``: adapters of running and of waiting requests."""
        def names(seqs: list[Any]) -> list[str]:
            uids = {s.request.lora_uid for s in seqs if s.request.lora_uid is not None}
            return sorted(self._names.get(u, str(u)) for u in uids)

        return {"max_lora": self.max_loras, "running": names(running), "waiting": names(waiting)}
