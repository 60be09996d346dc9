"""Runs one scheduled step through the model: one flat batch, one forward, logits only where needed.

Pooling requests get no logits: the rows of their chunk of the step's hidden states are handed
back as views (no copy); the model's LM head only runs on the rows that sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from heron.engine.scheduler import SchedulerOutput
from heron.interfaces import AttentionBackend, ForwardBatch

__all__ = ("ModelRunner", "StepLogits")


@dataclass(slots=True)
class StepLogits:
    #: [num sampling seqs, vocab], in the order of ``SchedulerOutput.scheduled`` (sampling ones)
    sample: torch.Tensor
    #: seq_id -> [chunk tokens, vocab] logits of every token of the chunk (prompt_logprobs requests)
    full: dict[int, torch.Tensor]
    #: seq_id -> [chunk tokens, hidden] views of the step's hidden states (pooling requests)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)


class ModelRunner:
    """Builds the step's :class:`ForwardBatch` and runs the model under ``inference_mode``."""

    def __init__(self, model: torch.nn.Module, backend: AttentionBackend, block_size: int,
                 device: torch.device, lora: Any = None) -> None:
        self.model = model
        self.lora = lora  # heron.engine.lora.EngineLoRA: the step's adapters, set before the forward
        self.backend = backend
        self.block_size = block_size
        self.device = device

    def prepare(self, sched: SchedulerOutput) -> tuple[torch.Tensor, torch.Tensor, ForwardBatch]:
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        q_lens: list[int] = []
        s_lens: list[int] = []
        tables: list[list[int]] = []
        for item in sched.scheduled:
            seq, n = item.seq, item.num_new_tokens
            start = seq.num_computed_tokens
            end = start + n
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
        width = max(len(t) for t in tables)
        block_tables = torch.zeros(len(tables), width, dtype=torch.int32)
        for i, t in enumerate(tables):
            block_tables[i, : len(t)] = torch.tensor(t, dtype=torch.int32)
        q = torch.tensor(q_lens, dtype=torch.int32)
        starts = torch.zeros(len(q_lens) + 1, dtype=torch.int32)
        torch.cumsum(q, 0, out=starts[1:])
        batch = ForwardBatch(
            num_reqs=len(q_lens),
            num_tokens=len(ids),
            block_size=bs,
            query_lens=q_lens,
            seq_lens=s_lens,
            query_start_loc=starts,
            seq_lens_tensor=torch.tensor(s_lens, dtype=torch.int32),
            block_tables=block_tables,
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            logits_indices=(starts[1:] - 1).to(torch.int64),
        )
        return torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64), batch

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput, full_logits_for: set[int],
                hidden_for: set[int] | frozenset[int] = frozenset()) -> StepLogits:
        """Forward the step; logits for sampling rows, whole-chunk logits for ``full_logits_for``
        and the chunk's hidden rows for ``hidden_for`` (seq ids)."""
        input_ids, positions, batch = self.prepare(sched)
        batch.attn_metadata = self.backend.build_batch(batch)
        if self.lora is not None:
            self.lora.begin_step(sched)
        try:
            hidden = self.model(input_ids, positions, batch)  # [num_tokens, H]
        finally:
            if self.lora is not None:
                self.lora.end_step()
        starts = batch.query_start_loc.tolist()
        sample_rows = [starts[i + 1] - 1 for i, item in enumerate(sched.scheduled) if item.needs_logits]
        full: dict[int, torch.Tensor] = {}
        rows: dict[int, torch.Tensor] = {}
        if full_logits_for or hidden_for:
            for i, item in enumerate(sched.scheduled):
                sid = item.seq.seq_id
                if sid in full_logits_for:
                    full[sid] = self.model.compute_logits(hidden[starts[i]:starts[i + 1]]).float()
                if sid in hidden_for:
                    rows[sid] = hidden[starts[i]:starts[i + 1]]
        if sample_rows:
            if len(sample_rows) == hidden.shape[0]:
                sample = self.model.compute_logits(hidden)
            else:
                sample = self.model.compute_logits(hidden[torch.tensor(sample_rows)])
        else:
            sample = hidden.new_empty((0, 0))
        return StepLogits(sample, full, rows)
