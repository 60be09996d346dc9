"""The engine's LoRA adapters: which are registered, which request uses which, removal, stats.

:class:`heron.lora.LoRAManager` owns the weights (parsing, resident slots, the batched layers);
this is the engine's bookkeeping around it. Every registered adapter gets a uid that is never
reused; a request's uid goes into its prefix-cache key, so two adapters (or an adapter and the one
that replaced it under the same name) never share KV blocks. Removing an adapter that unfinished
requests still use hides its name at once and drops its weights once they are done.
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
            self.manager.remove(name)
        log.info("LoRA adapter %r unloaded", name)
        return True

    def sweep(self, requests: dict[str, Request]) -> None:
        """Drop the weights of removed adapters that no unfinished request uses any more."""
        for name, uid in list(self._retired.items()):
            if not any(r.lora_uid == uid for r in requests.values()):
                self.manager.remove(name)
                del self._retired[name]

    def uid_for(self, req: LoRARequest) -> int:
        """The uid a request for ``req`` runs with (registering the adapter on first use)."""
        found = self.manager.get(req.lora_name)
        if found is not None and req.lora_name not in self._retired:
            return found[0]
        return self.add(req)

    def list(self) -> list[LoRARequest]:
        return [r for r in self.manager.list() if r.lora_name not in self._retired]

    def begin_step(self, sched: Any) -> None:
        items = sched.scheduled
        self.manager.begin_step([item.seq.request.lora_uid for item in items], [item.num_new_tokens for item in items])

    def end_step(self) -> None:
        self.manager.end_step()

    def stats(self, running: list[Any], waiting: list[Any]) -> dict[str, Any]:
        """vLLM's ``lora_requests_info``: adapters of running and of waiting requests."""
        def names(seqs: list[Any]) -> list[str]:
            uids = {s.request.lora_uid for s in seqs if s.request.lora_uid is not None}
            return sorted(self._names.get(u, str(u)) for u in uids)

        return {"max_lora": self.max_loras, "running": names(running), "waiting": names(waiting)}
