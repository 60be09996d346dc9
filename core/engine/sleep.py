"""Sleep mode (vLLM's ``/sleep``, ``/wake_up``, ``/is_sleeping``): give an idle engine's memory back.

Level 1 frees the paged KV pool (nothing in it survives, so the prefix cache is reset too);
level 2 also releases every weight tensor of the model, and waking reloads them from the
checkpoint (the same files, so the same numbers). Under tensor parallelism rank 0 makes the same
call on every rank (each frees and restores its own shard and KV pool) and sums what was freed. vLLM's level 1 first copies GPU weights to host
memory; on a CPU they already are, so heron's level 1 leaves them in place. Waking takes vLLM's
``tags``: ``weights`` and ``kv_cache`` bring back one part; the engine sleeps until both are back.

Sleep happens on the engine thread between two steps, when no sequence holds a KV block: the
async client first ends the open requests (mode ``abort``, vLLM's default: they finish with reason
``abort``), lets them finish (``wait``), or pauses them (``keep``: preempted now, recomputed from
their tokens after waking). While asleep ``step()`` does nothing and the client refuses new
requests with :class:`EngineSleepingError` (the server answers 503).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from heron.engine.config import release_free_memory
from heron.engine.errors import EngineBusyError
from heron.engine.request import SequenceStatus
from heron.layers import allocate_kv_caches, attention_layers

if TYPE_CHECKING:
    from heron.engine.engine import LLMEngine

__all__ = ("SLEEP_LEVELS", "SLEEP_MODES", "WAKE_TAGS", "EngineSleepingError", "SleepControl", "SleepState",
           "check_sleep", "preempt_all", "release_weights", "restore_weights", "sleep_engine", "wake_engine")

log = logging.getLogger("heron.engine")

SLEEP_LEVELS = (1, 2)
SLEEP_MODES = ("abort", "wait", "keep")
WAKE_TAGS = ("weights", "kv_cache")

_Slot = tuple[str, str, str]  # (module name, "param" | "buffer" | "attr", attribute name)


class EngineSleepingError(EngineBusyError):
    """The engine is asleep (or falling asleep); wake it first."""


@dataclass(slots=True)
class SleepState:
    """What a sleeping engine has given back."""

    level: int = 0  # the deepest level asked for since the last full wake (0: awake)
    kv_released: bool = False
    weights_released: bool = False
    #: bytes freed by the last sleep: the KV pool, the weight tensors
    kv_bytes: int = 0
    weight_bytes: int = 0

    @property
    def asleep(self) -> bool:
        return self.kv_released or self.weights_released


def check_sleep(engine: LLMEngine, level: int, mode: str = "abort") -> None:
    """Raise ValueError (a 400) unless ``engine`` can sleep at ``level`` in ``mode``."""
    if level not in SLEEP_LEVELS:
        raise ValueError(f"Sleep level must be 1 (free the KV cache) or 2 (also the weights), got {level}.")
    if mode not in SLEEP_MODES:
        raise ValueError(f"Sleep mode must be one of {', '.join(SLEEP_MODES)}, got {mode!r}.")
    if level == 2 and engine.lora is not None:
        raise ValueError("Sleep level 2 reloads the weights from the checkpoint, which LoRA-wrapped layers do not "
                         "allow; use level 1, or serve without --enable-lora.")


def preempt_all(engine: LLMEngine) -> int:
    """Move every running sequence back to the front of the queue, its blocks freed (it is
    recomputed from its tokens when scheduled again); returns how many."""
    sched = engine.scheduler
    running = list(sched.running)
    for seq in reversed(running):  # pushed to the front in reverse: the queue keeps their order
        sched.running.remove(seq)
        engine.blocks.free_seq(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        sched.num_preemptions += 1
        sched.waiting.push(seq, front=True)
    return len(running)


def sleep_engine(engine: LLMEngine, level: int) -> SleepState:
    """Free the KV pool (and at level 2 the weights); call between steps. Sleeping again at a
    deeper level releases what is still held; a shallower one changes nothing."""
    check_sleep(engine, level)
    state = engine.sleep_state
    if preempt_all(engine):
        log.info("sleep: running sequences paused; they are recomputed after waking")
    engine.blocks.reset_prefix_cache()
    engine.blocks.check_no_leaks()  # no sequence holds a block: the pool can go
    if not state.kv_released:
        for layer in attention_layers(engine.model):
            layer.kv_cache = None  # the views were the pool's only references: it is unmapped
        state.kv_released, state.kv_bytes = True, engine.kv_cache_bytes
    if level == 2 and not state.weights_released:
        state.weight_bytes = release_weights(engine.model)
        state.weights_released = True
    parallel = getattr(engine, "parallel", None)
    if parallel is not None:  # every rank frees its own shard and KV pool; the bytes are summed
        for freed in parallel.control("sleep", level=level)[1:]:
            state.kv_bytes += freed["kv_bytes"]
            state.weight_bytes += freed["weight_bytes"]
    state.level = max(state.level, level)
    release_free_memory()
    log.info("asleep (level %d): KV cache %.1f MiB%s freed", state.level, state.kv_bytes / 2**20,
             f", weights {state.weight_bytes / 2**20:.1f} MiB" if state.weights_released else "")
    return state


def wake_engine(engine: LLMEngine, tags: list[str] | None = None) -> SleepState:
    """Bring back the weights (reloaded from the checkpoint) and a fresh, empty KV pool; ``tags``
    limits it to ``weights`` or ``kv_cache``. Waking an awake engine does nothing."""
    wanted = list(WAKE_TAGS) if not tags else tags
    unknown = [t for t in wanted if t not in WAKE_TAGS]
    if unknown:
        raise ValueError(f"Unknown wake-up tag(s) {', '.join(map(repr, unknown))}; use weights or kv_cache.")
    state = engine.sleep_state
    if "weights" in wanted and state.weights_released:
        restore_weights(engine)
        state.weights_released = False
    if "kv_cache" in wanted and state.kv_released:
        allocate_kv_caches(engine.model, engine.backend_cls, engine.num_kv_blocks, engine.config.block_size,
                           engine.dtype, _device(engine))
        state.kv_released = False
    parallel = getattr(engine, "parallel", None)
    if parallel is not None:
        parallel.control("wake_up", tags=wanted)
    if not state.asleep:
        state.level = 0
        log.info("awake")
    return state


def _device(engine: Any) -> torch.device:
    """The engine's resolved device (``--device auto`` names none)."""
    return getattr(engine, "device", None) or torch.device(engine.config.device)


def _tensor_slots(model: nn.Module) -> list[tuple[_Slot, nn.Module, torch.Tensor]]:
    """Every tensor the model's modules hold: parameters, buffers and plain tensor attributes
    (kernels keep packed weights that way), but not the KV cache."""
    slots = []
    for name, module in model.named_modules():
        for kind, table in (("param", module._parameters), ("buffer", module._buffers),
                            ("attr", module.__dict__)):
            for key, value in table.items():
                if isinstance(value, torch.Tensor) and key != "kv_cache":
                    slots.append(((name, kind, key), module, value))
    return slots


def release_weights(model: nn.Module) -> int:
    """Replace every weight tensor of ``model`` with an empty one; returns the bytes let go,
    counted per storage (views share one; an expanded placeholder holds a single element)."""
    seen: dict[int, int] = {}
    with torch.no_grad():
        for (_, kind, key), module, tensor in _tensor_slots(model):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            empty = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
            if kind == "param":
                module._parameters[key] = nn.Parameter(empty, requires_grad=False)
            elif kind == "buffer":
                module._buffers[key] = empty
            else:
                module.__dict__[key] = empty
    return sum(seen.values())


def restore_weights(engine: LLMEngine) -> None:
    """Rebuild the model from the checkpoint (plugin, backend, linear kernel as at start) and move
    its tensors into the sleeping model's modules, so every reference to them stays valid."""
    from heron.engine.setup import load_model

    fresh = load_model(engine.checkpoint, engine.config, dtype=engine.dtype, device=_device(engine)).model
    modules = dict(engine.model.named_modules())
    wanted = {slot for slot, _, _ in _tensor_slots(engine.model)}
    for (name, kind, key), _, tensor in _tensor_slots(fresh):
        module = modules.get(name)
        if module is None:
            raise RuntimeError(f"the reloaded model has a module {name!r} the served one lacks; restart the server.")
        table = {"param": module._parameters, "buffer": module._buffers, "attr": module.__dict__}[kind]
        table[key] = tensor
        wanted.discard((name, kind, key))
    if wanted:
        raise RuntimeError(f"reloading the weights left {len(wanted)} tensor(s) empty (e.g. {sorted(wanted)[0]}); "
                           "restart the server.")
    del fresh
    release_free_memory()


class SleepControl:
    """Sleep mode for :class:`heron.engine.AsyncEngine` (a mixin: it uses the client's streams
    and its engine-thread calls)."""

    engine: Any
    _sleep_requested: bool
    _streams: dict[str, Any]

    @property
    def is_sleeping(self) -> bool:
        """Asleep, or falling asleep: new requests are refused from the moment ``sleep`` is called."""
        return self._sleep_requested or self._engine_asleep()

    def _engine_asleep(self) -> bool:
        """Whether the engine gave its memory back (the loop must not step it); engines without
        sleep mode never are."""
        state = getattr(self.engine, "sleep_state", None)
        return state is not None and state.asleep

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        """Free the KV pool (level 1) and the weights (level 2). ``mode`` says what happens to the
        open requests: ``abort`` (vLLM's default) ends them, ``wait`` lets them finish first,
        ``keep`` pauses them until ``wake_up``. Raises ValueError for a bad level or mode."""
        check_sleep(self.engine, level, mode)
        self._sleep_requested = True
        try:
            while mode == "wait" and self._streams:
                await asyncio.sleep(0.05)
            await self._on_engine_thread(lambda: self._fall_asleep(level, mode))
        except BaseException:
            self._sleep_requested = self._engine_asleep()
            raise

    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Reload what sleep released (``tags``: only ``weights`` or ``kv_cache``). Raises ValueError."""
        await self._on_engine_thread(lambda: wake_engine(self.engine, tags))
        self._sleep_requested = self._engine_asleep()

    def _fall_asleep(self, level: int, mode: str) -> SleepState:
        """On the engine thread: end the open requests (``abort``), then sleep."""
        if mode == "abort":
            for rid in list(self.engine.requests):
                out = self.engine.abort(rid)
                stream = self._stream(rid)
                if stream is not None and out is not None:
                    stream.put(out)
        return sleep_engine(self.engine, level)

    # provided by AsyncEngine
    def _stream(self, request_id: str) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _on_engine_thread(self, fn: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError
