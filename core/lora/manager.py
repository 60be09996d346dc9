"""Which adapters are registered, which sit in the model's serving slots, and what a step uses.

:class:`LoRAManager` owns one model's LoRA state. ``register`` gives an adapter a fresh uid
(never reused, so it can key the prefix cache) and wraps the modules it targets in
:class:`~heron.lora.layers.LoRALinear` (lazily: a model without adapters runs untouched).
``begin_step`` makes the step's adapters resident -- at most ``max_loras`` slots, evicting the
least recently used slot the step does not need -- and writes the shared per-step state the
layers read. Parsed adapters stay in memory up to ``max_cpu_loras`` (least recently used first
out); one pushed out is read again from disk the next time a step needs it. Everything but
:meth:`LoRAManager.load` runs on the engine thread, between forwards.

Under tensor parallelism every rank has its own manager over its shard (the adapter is sliced
per rank by :mod:`heron.lora.sharding`): rank 0 picks the slots (:meth:`LoRAManager.assign`) and
sends them with the step, the other ranks register under rank 0's uids and load whatever
rank 0's slots hold (:meth:`LoRAManager.begin_step` with ``slots``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from heron.lora.adapter import LoRAAdapter, load_adapter
from heron.lora.layers import LoRALinear, LoRAStepState
from heron.lora.request import LoRAError, LoRARequest
from heron.lora.sharding import split_collective

__all__ = ("LoRAManager",)


@dataclass(slots=True)
class _Registered:
    uid: int
    request: LoRARequest
    adapter: LoRAAdapter | None  # None once max_cpu_loras pushed it out of memory


class LoRAManager:
    """LoRA adapters over one model: registry, resident slots (LRU) and the per-step state.

    Args:
        model: a :class:`heron.interfaces.CausalLM` module with ``supports_lora`` true.
        max_loras: adapters resident at once (slots; the most one step may use).
        max_lora_rank: the largest rank accepted.
        max_cpu_loras: parsed adapters kept in memory (None: ``max_loras``; at least ``max_loras``).
        dtype: the model dtype (LoRA weights are kept in it).
        device: where the slots live.
    """

    def __init__(self, model: nn.Module, *, max_loras: int, max_lora_rank: int, max_cpu_loras: int | None,
                 dtype: torch.dtype, device: torch.device) -> None:
        if not getattr(model, "supports_lora", False) or not callable(getattr(model, "lora_target", None)):
            raise LoRAError(f"{type(model).__name__} does not support LoRA adapters; start without --enable-lora.")
        if max_loras < 1 or max_lora_rank < 1:
            raise ValueError(f"max_loras ({max_loras}) and max_lora_rank ({max_lora_rank}) must be at least 1.")
        cpu = max_loras if max_cpu_loras is None else max_cpu_loras
        if cpu < max_loras:
            raise ValueError(f"max_cpu_loras ({cpu}) must be at least max_loras ({max_loras}).")
        self.model, self.dtype, self.device = model, dtype, torch.device(device)
        self.max_loras, self.max_lora_rank, self.max_cpu_loras = max_loras, max_lora_rank, cpu
        self.state = LoRAStepState()
        self._uids = itertools.count(1)
        self._by_name: dict[str, _Registered] = {}
        self._by_uid: dict[int, _Registered] = {}
        self._in_memory: OrderedDict[int, None] = OrderedDict()  # uids holding parsed tensors, LRU first
        self._slot_uid: list[int | None] = [None] * max_loras
        self._slot_lru: OrderedDict[int, None] = OrderedDict()  # occupied slots, LRU first
        self._layers: dict[str, LoRALinear] = {}

    def load(self, req: LoRARequest) -> LoRAAdapter:
        """Parse and validate ``req``'s adapter for this model (any thread; :func:`load_adapter`)."""
        return load_adapter(req, self.model, max_rank=self.max_lora_rank, dtype=self.dtype)

    def register(self, adapter: LoRAAdapter, uid: int | None = None) -> int:
        """Make ``adapter`` servable (wrapping the modules it targets); returns its uid.

        Args:
            adapter: what :meth:`load` returned.
            uid: the uid to use (a tensor-parallel worker takes rank 0's); None: a fresh one.
        Raises:
            LoRAError: an adapter of the same name (or uid) is registered already.
        """
        name = adapter.request.lora_name
        if name in self._by_name or uid in self._by_uid:
            raise LoRAError(f"A LoRA adapter named {name!r} is registered already.", param="lora_name")
        self._fit_layers(adapter)
        entry = _Registered(next(self._uids) if uid is None else uid, adapter.request, adapter)
        self._by_name[name] = self._by_uid[entry.uid] = entry
        self._remember(entry)
        return entry.uid

    def remove(self, name: str) -> bool:
        """Forget adapter ``name`` and free its slot; False when no such adapter is registered."""
        entry = self._by_name.pop(name, None)
        if entry is None:
            return False
        del self._by_uid[entry.uid]
        self._in_memory.pop(entry.uid, None)
        for slot, uid in enumerate(self._slot_uid):
            if uid == entry.uid:
                self._slot_uid[slot] = None
                self._slot_lru.pop(slot, None)
        return True

    def get(self, name: str) -> tuple[int, LoRARequest] | None:
        """(uid, request) of the registered adapter ``name``, or None."""
        entry = self._by_name.get(name)
        return None if entry is None else (entry.uid, entry.request)

    def name_of(self, uid: int) -> str | None:
        """The name of the adapter registered under ``uid``, or None."""
        entry = self._by_uid.get(uid)
        return None if entry is None else entry.request.lora_name

    def list(self) -> list[LoRARequest]:
        """Every registered adapter's request, in registration order."""
        return [entry.request for entry in self._by_name.values()]

    def assign(self, uids: list[int | None]) -> list[int]:
        """Make the step's adapters resident; per item, the slot of its adapter (-1: the base model).

        Args:
            uids: per scheduled item, its adapter's uid (None: the base model), in the step's order.
        Raises:
            ValueError: the step uses more than ``max_loras`` adapters, or an unregistered uid.
            LoRAError: an adapter pushed out of memory can no longer be read from disk.
        """
        step = list(dict.fromkeys(uid for uid in uids if uid is not None))
        if len(step) > self.max_loras:
            raise ValueError(f"A step uses {len(step)} LoRA adapters but max_loras is {self.max_loras}.")
        slot_of = {uid: self._make_resident(uid, protect=set(step)) for uid in step}
        return [-1 if uid is None else slot_of[uid] for uid in uids]

    def begin_step(self, uids: list[int | None], counts: list[int], slots: list[int] | None = None) -> None:
        """Prepare the LoRA layers for a forward over the step's items.

        Args:
            uids: per scheduled item, its adapter's uid (None: the base model), in the step's order.
            counts: per item, its number of new tokens (their sum is the forward's token count).
            slots: per item, the slot its adapter sits in, as rank 0's :meth:`assign` chose (-1 for
                the base model); None: choose them here.
        Raises:
            ValueError: the step uses more than ``max_loras`` adapters, or an unregistered uid.
            LoRAError: an adapter pushed out of memory can no longer be read from disk.
        """
        if len(uids) != len(counts) or (slots is not None and len(slots) != len(uids)):
            raise ValueError(f"begin_step got {len(uids)} uids for {len(counts)} token counts.")
        if slots is None:
            slots = self.assign(uids)
        slot_of = {uid: slot for uid, slot in zip(uids, slots, strict=True) if uid is not None}
        if not slot_of:
            self.end_step()
            return
        for uid, slot in slot_of.items():
            self._place(uid, slot)
        self._set_state(uids, counts, slot_of)

    def _set_state(self, uids: list[int | None], counts: list[int], slot_of: dict[int, int]) -> None:
        """Write the shared per-step state from each item's adapter and its slot."""
        slots = sorted(set(slot_of.values()))
        column = {slot: i for i, slot in enumerate(slots)}
        cols = torch.tensor([-1 if uid is None else column[slot_of[uid]] for uid in uids])  # [items]
        per_token = torch.repeat_interleave(cols, torch.tensor(counts, dtype=torch.long))  # [T]
        state = self.state
        state.num_tokens = int(per_token.shape[0])
        state.slots = torch.tensor(slots, dtype=torch.long, device=self.device)
        state.all_slots = slots == list(range(self.max_loras))
        state.slot = slots[0] if len(slots) == 1 else None
        if state.slot is not None and None not in uids:
            state.mask = None  # every token runs through the one adapter
        else:
            mask = per_token[:, None] == torch.arange(len(slots))[None, :]  # [T, n]
            state.mask = mask.to(device=self.device, dtype=torch.float32)[:, :, None]  # [T, n, 1]

    def end_step(self) -> None:
        """Clear the per-step state: the layers skip LoRA until the next :meth:`begin_step`."""
        state = self.state
        state.slots, state.mask, state.all_slots, state.slot, state.num_tokens = None, None, False, None, 0

    def _make_resident(self, uid: int, protect: set[int]) -> int:
        """The slot holding adapter ``uid``, loading it into a free or least recently used slot."""
        entry = self._by_uid.get(uid)
        if entry is None:
            raise ValueError(f"LoRA adapter uid {uid} is not registered (was it removed?).")
        if uid in self._in_memory:
            self._in_memory.move_to_end(uid)
        if uid in self._slot_uid:
            slot = self._slot_uid.index(uid)
        else:
            slot = next((s for s, u in enumerate(self._slot_uid) if u is None), None)
            if slot is None:  # evict the least recently used slot this step does not use
                slot = next(s for s in self._slot_lru if self._slot_uid[s] not in protect)
        self._place(uid, slot)
        return slot

    def _place(self, uid: int, slot: int) -> None:
        """Make ``slot`` hold adapter ``uid`` (loading it unless it is there already); mark it used."""
        if not 0 <= slot < self.max_loras:
            raise ValueError(f"LoRA slot {slot} is out of range (max_loras {self.max_loras}).")
        if self._slot_uid[slot] != uid:
            entry = self._by_uid.get(uid)
            if entry is None:
                raise ValueError(f"LoRA adapter uid {uid} is not registered (was it removed?).")
            adapter = self._materialize(entry)
            for name, layer in self._layers.items():
                layer.set_slot(slot, adapter.weights.get(name, []))
            self._slot_uid = [None if u == uid else u for u in self._slot_uid]  # a worker may move an adapter
            self._slot_uid[slot] = uid
        self._slot_lru[slot] = None
        self._slot_lru.move_to_end(slot)

    def _materialize(self, entry: _Registered) -> LoRAAdapter:
        """The entry's parsed adapter, read again from disk when it was pushed out of memory."""
        if entry.adapter is None:
            entry.adapter = self.load(entry.request)
            self._fit_layers(entry.adapter)
            self._remember(entry)
        return entry.adapter

    def _remember(self, entry: _Registered) -> None:
        """Count ``entry`` as in memory; drop the least recently used parsed adapters past max_cpu_loras."""
        self._in_memory[entry.uid] = None
        self._in_memory.move_to_end(entry.uid)
        while len(self._in_memory) > self.max_cpu_loras:
            old, _ = self._in_memory.popitem(last=False)
            self._by_uid[old].adapter = None  # a resident copy stays in its slot

    def _fit_layers(self, adapter: LoRAAdapter) -> None:
        """Wrap (or widen) every module ``adapter`` targets so a slot can hold its rank there."""
        for name, rank in adapter.rank_needs().items():
            layer = self._layers.get(name)
            if layer is None:
                parent_name, _, attr = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                base, collective = split_collective(getattr(parent, attr))  # the all-reduce runs after the delta
                layer = LoRALinear(base, self.state, self.max_loras, rank, self.dtype, self.device, collective)
                setattr(parent, attr, layer)
                self._layers[name] = layer
            layer.grow(rank)
