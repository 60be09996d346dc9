"""Runs one scheduled step through the model: one flat batch, one forward, logits only where needed.

A step is first turned into a :class:`StepPlan`: plain tensors and lists (input ids, positions,
the :class:`ForwardBatch` fields, which rows need logits, whole-chunk logits or hidden states)
that no longer refer to the scheduler. :func:`run_plan` runs a plan; under tensor parallelism
rank 0 broadcasts each plan and every rank runs it with the same function, so the
collectives inside the model happen in the same order everywhere. With LoRA adapters the plan
also says, per request, which adapter it uses and the slot rank 0 put that adapter in, so every
rank's layers add the same adapters' deltas (each rank its own slice of them).

Pooling requests get no logits: the rows of their chunk of the step's hidden states are handed
back as views (no copy); the model's LM head only runs on the rows that sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from heron.engine.scheduler import SchedulerOutput
from heron.interfaces import AttentionBackend, ForwardBatch, running_batch

__all__ = ("ModelRunner", "StepLogits", "StepPlan", "build_batch", "run_plan")


@dataclass(slots=True)
class StepLogits:
    #: [num sampling seqs, vocab], in the order of ``SchedulerOutput.scheduled`` (sampling ones)
    sample: torch.Tensor
    #: seq_id -> [chunk tokens, vocab] logits of every token of the chunk (prompt_logprobs requests)
    full: dict[int, torch.Tensor]
    #: seq_id -> [chunk tokens, hidden] views of the step's hidden states (pooling requests)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass(slots=True)
class StepPlan:
    """Everything one forward needs, scheduler-free (what rank 0 broadcasts under tensor parallelism)."""

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    query_lens: list[int]  # [R] new tokens per request
    seq_lens: list[int]  # [R] tokens attended over per request
    block_tables: torch.Tensor  # [R, W] int32, padded with 0
    slot_mapping: torch.Tensor  # [T] int64
    sample_rows: list[int]  # flat rows whose logits are sampled, in order
    full_reqs: list[int] = field(default_factory=list)  # request indices that need whole-chunk logits
    hidden_reqs: list[int] = field(default_factory=list)  # request indices whose hidden rows are kept
    seq_ids: list[int] = field(default_factory=list)  # [R] (rank 0 only: maps request indices back)
    lora_uids: list[int] = field(default_factory=list)  # [R] adapter uid per request, -1: base ([] : no LoRA)
    lora_slots: list[int] = field(default_factory=list)  # [R] the slot holding that adapter, -1: base
    prompt_tokens: int = 0  # how many of the T tokens are prompt tokens (ForwardBatch.num_prompt_tokens)

    def to(self, device: torch.device) -> StepPlan:
        """The plan with its tensors on ``device`` (itself when they already are)."""
        if self.input_ids.device == device:
            return self
        move = {"non_blocking": True}
        return StepPlan(self.input_ids.to(device, **move), self.positions.to(device, **move), self.query_lens,
                        self.seq_lens, self.block_tables.to(device, **move), self.slot_mapping.to(device, **move),
                        self.sample_rows, self.full_reqs, self.hidden_reqs, self.seq_ids, self.lora_uids,
                        self.lora_slots, self.prompt_tokens)


def build_batch(plan: StepPlan, block_size: int) -> ForwardBatch:
    """The :class:`ForwardBatch` of a plan (on the plan's device)."""
    device = plan.input_ids.device
    starts_list = [0]
    for n in plan.query_lens:
        starts_list.append(starts_list[-1] + n)
    starts = torch.tensor(starts_list, dtype=torch.int32, device=device)  # [R + 1]
    return ForwardBatch(
        num_reqs=len(plan.query_lens),
        num_tokens=int(plan.input_ids.shape[0]),
        block_size=block_size,
        query_lens=plan.query_lens,
        seq_lens=plan.seq_lens,
        query_start_loc=starts,
        seq_lens_tensor=torch.tensor(plan.seq_lens, dtype=torch.int32, device=device),
        block_tables=plan.block_tables,
        slot_mapping=plan.slot_mapping,
        logits_indices=(starts[1:] - 1).to(torch.int64),
        num_prompt_tokens=plan.prompt_tokens,
    )


@torch.inference_mode()
def run_plan(model: torch.nn.Module, backend: AttentionBackend, plan: StepPlan, block_size: int,
             lora: Any = None) -> StepLogits:
    """Forward ``plan``; logits of its sample rows, whole-chunk logits of ``full_reqs`` and hidden
    rows of ``hidden_reqs`` (keyed by seq id when ``plan.seq_ids`` is set, else by request index).

    Every rank of a tensor-parallel group calls this with the same plan: the forward and each
    ``compute_logits`` call (the LM head gathers its vocabulary slices) run in the same order.
    ``lora`` (a :class:`heron.lora.LoRAManager`) is set up from the plan's adapters and slots.
    """
    batch = build_batch(plan, block_size)
    batch.attn_metadata = backend.build_batch(batch)
    use_lora = lora is not None and bool(plan.lora_slots)
    if use_lora:
        lora.begin_step([None if uid < 0 else uid for uid in plan.lora_uids], plan.query_lens, plan.lora_slots)
    with running_batch(batch):
        try:
            hidden = model(plan.input_ids, plan.positions, batch)  # [T, H]
        finally:
            if use_lora:
                lora.end_step()
        return _logits(model, plan, hidden)


def _logits(model: torch.nn.Module, plan: StepPlan, hidden: torch.Tensor) -> StepLogits:
    """run_plan's outputs from the forward's hidden states (inside the step's running_batch)."""
    starts = [0]
    for n in plan.query_lens:
        starts.append(starts[-1] + n)
    key = plan.seq_ids or list(range(len(plan.query_lens)))
    full = {key[i]: model.compute_logits(hidden[starts[i]:starts[i + 1]]).float() for i in plan.full_reqs}
    rows = {key[i]: hidden[starts[i]:starts[i + 1]] for i in plan.hidden_reqs}
    if not plan.sample_rows:
        sample = hidden.new_empty((0, 0))
    elif len(plan.sample_rows) == hidden.shape[0]:
        sample = model.compute_logits(hidden)  # [T, vocab]
    else:
        sample = model.compute_logits(hidden[torch.tensor(plan.sample_rows, device=hidden.device)])
    return StepLogits(sample, full, rows)


class ModelRunner:
    """Turns a scheduled step into a :class:`StepPlan` and runs it under ``inference_mode``.

    ``group`` (tensor parallelism, rank 0: a :class:`heron.distributed.group.RankGroup`):
    ``group.publish(plan)`` hands each plan to the other ranks before rank 0 runs it, and
    ``group.guard_forward(fn)`` runs rank 0's forward; both raise when a rank is gone.
    """

    def __init__(self, model: torch.nn.Module, backend: AttentionBackend, block_size: int,
                 device: torch.device, lora: Any = None, group: Any = None) -> None:
        self.model = model
        self.lora = lora  # heron.engine.lora.EngineLoRA: the step's adapters, set before the forward
        if lora is not None and group is not None:
            lora.use_group(group)  # registrations reach every rank
        self.backend = backend
        self.block_size = block_size
        self.device = device
        self.group = group

    def plan(self, sched: SchedulerOutput, full_logits_for: set[int] | frozenset[int] = frozenset(),
             hidden_for: set[int] | frozenset[int] = frozenset()) -> StepPlan:
        """The step's plan (CPU tensors); ``full_logits_for``/``hidden_for`` are seq ids."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        q_lens: list[int] = []
        s_lens: list[int] = []
        tables: list[list[int]] = []
        sample_rows: list[int] = []
        full_reqs: list[int] = []
        hidden_reqs: list[int] = []
        seq_ids: list[int] = []
        prompt_tokens = 0
        for i, item in enumerate(sched.scheduled):
            seq, n = item.seq, item.num_new_tokens
            start = seq.num_computed_tokens
            end = start + n
            prompt_tokens += max(0, min(end, seq.num_prompt_tokens) - start)
            table = seq.block_table
            if n == 1:
                ids.append(seq.token_ids[start])
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                ids.extend(seq.token_ids[start:end])
                positions.extend(range(start, end))
                slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            q_lens.append(n)
            s_lens.append(end)
            tables.append(table)
            seq_ids.append(seq.seq_id)
            if item.needs_logits:
                sample_rows.append(len(ids) - 1)
            if seq.seq_id in full_logits_for:
                full_reqs.append(i)
            if seq.seq_id in hidden_for:
                hidden_reqs.append(i)
        width = max(len(t) for t in tables)
        block_tables = torch.zeros(len(tables), width, dtype=torch.int32)  # [R, W]
        for i, t in enumerate(tables):
            block_tables[i, : len(t)] = torch.tensor(t, dtype=torch.int32)
        lora_uids, lora_slots = self.lora.plan_step(sched) if self.lora is not None else ([], [])
        return StepPlan(torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64), q_lens,
                        s_lens, block_tables, torch.tensor(slots, dtype=torch.int64), sample_rows, full_reqs,
                        hidden_reqs, seq_ids, lora_uids, lora_slots, prompt_tokens)

    def prepare(self, sched: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor, ForwardBatch]:
        """(input ids, positions, batch) of a step, on the runner's device."""
        plan = self.plan(sched).to(self.device)
        return plan.input_ids, plan.positions, build_batch(plan, self.block_size)

    def execute(self, sched: SchedulerOutput, full_logits_for: set[int],
                hidden_for: set[int] | frozenset[int] = frozenset()) -> StepLogits:
        """Forward the step; logits for sampling rows, whole-chunk logits for ``full_logits_for``
        and the chunk's hidden rows for ``hidden_for`` (seq ids)."""
        plan = self.plan(sched, full_logits_for, hidden_for)
        lora = self.lora.manager if self.lora is not None else None
        if self.group is None:
            return run_plan(self.model, self.backend, plan.to(self.device), self.block_size, lora)
        self.group.publish(plan)
        return self.group.guard_forward(
            lambda: run_plan(self.model, self.backend, plan.to(self.device), self.block_size, lora))
