"""What rank 0 tells the other ranks of a tensor-parallel group, over the group's CPU (gloo) group.

Every message starts with a fixed header, ``int64[8]`` = (command, T, R, W, sample rows, full
rows, hidden rows, LoRA), broadcast from rank 0. A step then sends one ``int64`` payload holding the
whole :class:`~heron.engine.model_runner.StepPlan` (ids, positions, slots, query and sequence
lengths, block tables, the rows that need logits and, when the header's LoRA flag is 1, each
request's adapter uid and slot): two small broadcasts per decode step, no pickling. A control
call (sleep, wake-up, profiling, LoRA load and unload) sends its name and arguments with
``broadcast_object_list`` and gathers every rank's result back to rank 0 with ``gather_object``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from heron.engine.model_runner import StepPlan

__all__ = ("CONTROL", "STEP", "STOP", "gather_results", "recv_command", "send_control", "send_step", "send_stop")

STEP, CONTROL, STOP = 1, 2, 3
_HEADER = 9


def _broadcast_header(values: list[int], group: Any) -> None:
    header = torch.tensor(values + [0] * (_HEADER - len(values)), dtype=torch.int64)
    dist.broadcast(header, 0, group=group)


def send_step(plan: StepPlan, group: Any) -> None:
    """Rank 0: broadcast ``plan`` (its tensors on the CPU)."""
    t, r, w = int(plan.input_ids.shape[0]), len(plan.query_lens), int(plan.block_tables.shape[1])
    lora = int(bool(plan.lora_slots))
    _broadcast_header([STEP, t, r, w, len(plan.sample_rows), len(plan.full_reqs), len(plan.hidden_reqs), lora,
                       plan.prompt_tokens], group)
    payload = torch.cat([
        plan.input_ids, plan.positions, plan.slot_mapping,  # [T] each
        torch.tensor(plan.query_lens + plan.seq_lens, dtype=torch.int64),  # [2R]
        plan.block_tables.reshape(-1).to(torch.int64),  # [R * W]
        torch.tensor(plan.sample_rows + plan.full_reqs + plan.hidden_reqs, dtype=torch.int64),
        torch.tensor(plan.lora_uids + plan.lora_slots if lora else [], dtype=torch.int64),  # [2R] or [0]
    ])
    dist.broadcast(payload, 0, group=group)


def _recv_step(header: list[int], group: Any) -> StepPlan:
    _, t, r, w, n_sample, n_full, n_hidden, lora, prompt_tokens = header
    n_rows, n_lora = n_sample + n_full + n_hidden, 2 * r * lora
    payload = torch.empty(3 * t + 2 * r + r * w + n_rows + n_lora, dtype=torch.int64)
    dist.broadcast(payload, 0, group=group)
    ids, positions, slots, lens, tables, rows, loras = payload.split([t, t, t, 2 * r, r * w, n_rows, n_lora])
    lens_l, rows_l, lora_l = lens.tolist(), rows.tolist(), loras.tolist()
    return StepPlan(ids, positions, lens_l[:r], lens_l[r:], tables.view(r, w).to(torch.int32), slots,
                    rows_l[:n_sample], rows_l[n_sample:n_sample + n_full], rows_l[n_sample + n_full:],
                    lora_uids=lora_l[:r * lora], lora_slots=lora_l[r * lora:], prompt_tokens=prompt_tokens)


def send_control(name: str, kwargs: dict[str, Any], group: Any) -> None:
    """Rank 0: announce the control call ``name(**kwargs)``."""
    _broadcast_header([CONTROL], group)
    dist.broadcast_object_list([name, kwargs], 0, group=group)


def send_stop(group: Any) -> None:
    """Rank 0: tell every rank to leave its loop."""
    _broadcast_header([STOP], group)


def recv_command(group: Any) -> tuple[int, Any]:
    """Other ranks: wait for the next message; (STEP, plan), (CONTROL, (name, kwargs)) or (STOP, None)."""
    header_t = torch.empty(_HEADER, dtype=torch.int64)
    dist.broadcast(header_t, 0, group=group)
    header = header_t.tolist()
    if header[0] == STEP:
        return STEP, _recv_step(header, group)
    if header[0] == CONTROL:
        box: list[Any] = [None, None]
        dist.broadcast_object_list(box, 0, group=group)
        return CONTROL, (box[0], box[1])
    if header[0] == STOP:
        return STOP, None
    raise RuntimeError(f"unknown tensor-parallel command {header[0]} from rank 0")


def gather_results(result: Any, group: Any) -> list[Any] | None:
    """Every rank's ``result`` of a control call, in rank order, on rank 0 (None elsewhere)."""
    rank, size = dist.get_rank(), dist.get_world_size()
    out: list[Any] | None = [None] * size if rank == 0 else None
    dist.gather_object(result, out, dst=0, group=group)
    return out
