"""The serving side of LoRA: a linear wrapper that adds every token's adapter delta in one batch.

:class:`LoRALinear` wraps any linear module (``nn.Linear`` or a linear kernel's module) and keeps
``S`` slots (``--max-loras``) of stacked ``A`` ``[S, R, in]`` and scaled ``B`` ``[S, R, out]``
buffers in the model dtype. Before a forward the manager fills :class:`LoRAStepState`, shared by
every wrapper of the model: which slots the step uses and a ``[T, n]`` token-to-slot mask. The
wrapper then computes ``h = x @ A_active^T`` (``[T, n*R]``), zeroes each token's columns of the
other adapters and adds ``h @ B_active`` -- two GEMMs per layer, no loop over requests. A fused
projection (q/k/v) holds each shard's ``A`` at its own rank offset and its ``B`` in its own
output rows, zeros elsewhere, so the sum is exact. With no adapter in the step
(``state.slots is None``) the wrapper returns ``base(x)`` untouched. Under tensor parallelism a
row-parallel projection's all-reduce is the wrapper's ``collective``: it runs after the delta is
added, so the ranks' partial deltas are summed once (:mod:`heron.lora.sharding`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from heron.lora.adapter import LoRAShard

__all__ = ("LoRALinear", "LoRAStepState", "SMALL_STEP_TOKENS")

#: steps of at most this many tokens compute the delta of a bf16/fp16 model in fp32 (faster on CPU)
SMALL_STEP_TOKENS = 8


@dataclass(slots=True)
class LoRAStepState:
    """What the step's LoRA layers read; one instance per model, written by the manager between steps.

    Attributes:
        slots: [n] int64, the slots the step's adapters sit in (ascending), or None when no
            token of the step uses an adapter (the layers then skip LoRA entirely).
        mask: [T, n, 1] fp32, 1 where token t belongs to the adapter in ``slots[i]``; None
            when every token of the step uses the one adapter ``slot``.
        all_slots: ``slots`` is every slot in order, so the layers use their buffers without a gather.
        slot: the slot of the step's only adapter (a view of its buffers, no gather), else None.
        num_tokens: T, the step's token count.
    """

    slots: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    all_slots: bool = False
    slot: int | None = None
    num_tokens: int = 0


class LoRALinear(nn.Module):
    """``base(x) + x A^T B`` per token, ``A``/``B`` picked by the step's token-to-slot mask.

    Args:
        base: the wrapped linear module (anything with ``in_features``/``out_features``).
        state: the model's shared :class:`LoRAStepState`.
        num_slots: adapters resident at once (``--max-loras``).
        rank: slot rank capacity (sum of the fused shards' ranks); :meth:`grow` raises it.
        dtype: buffer dtype (the model's).
        device: buffer device.
        collective: run on the output after the delta (a row-parallel projection's all-reduce,
            taken off ``base``), or None.
    """

    def __init__(self, base: nn.Module, state: LoRAStepState, num_slots: int, rank: int, dtype: torch.dtype,
                 device: torch.device, collective: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.base_layer = base
        self.state = state
        self.collective = collective
        in_features, out_features = base.in_features, base.out_features
        self.register_buffer("lora_a", torch.zeros(num_slots, rank, in_features, dtype=dtype, device=device),
                             persistent=False)  # [S, R, in]
        self.register_buffer("lora_b", torch.zeros(num_slots, rank, out_features, dtype=dtype, device=device),
                             persistent=False)  # [S, R, out], scaling folded in
        self._sync_fp32()

    def _sync_fp32(self) -> None:
        """fp32 copies of the slots for reduced-precision models: a few tokens' delta is several
        times faster in fp32 than in bf16 on CPU (tiny bf16 GEMMs take a slow path)."""
        reduced = self.lora_a.dtype in (torch.bfloat16, torch.float16)
        self.lora_a32 = self.lora_a.float() if reduced else None  # [S, R, in]
        self.lora_b32 = self.lora_b.float() if reduced else None  # [S, R, out]

    def __getattr__(self, name: str) -> Any:
        """Attributes the wrapper lacks (``weight``, ``in_features`` ...) come from the base module."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base_layer")
            if base is None:
                raise
            return getattr(base, name)

    @property
    def rank(self) -> int:
        """The slot rank capacity."""
        return self.lora_a.shape[1]

    def grow(self, rank: int) -> None:
        """Raise the slot rank capacity to ``rank`` keeping the slots' contents (between steps only)."""
        if rank <= self.rank:
            return
        a = self.lora_a.new_zeros(self.lora_a.shape[0], rank, self.lora_a.shape[2])
        b = self.lora_b.new_zeros(self.lora_b.shape[0], rank, self.lora_b.shape[2])
        a[:, : self.rank], b[:, : self.rank] = self.lora_a, self.lora_b
        self.lora_a, self.lora_b = a, b
        self._sync_fp32()

    @torch.no_grad()
    def set_slot(self, slot: int, shards: list[LoRAShard]) -> None:
        """Write one adapter's shards for this module into ``slot`` (an empty list clears it)."""
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        offset = 0
        for rows, a, b in shards:  # a [r, in], b [rows, r]
            r = a.shape[0]
            start, count = rows if rows is not None else (0, self.lora_b.shape[2])
            self.lora_a[slot, offset : offset + r] = a
            self.lora_b[slot, offset : offset + r, start : start + count] = b.t()
            offset += r
        self._sync_fp32()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., out]; the leading dims flatten to the step's T tokens."""
        out = self.base_layer(x)
        if self.state.slots is not None:
            out = self._add_delta(x, out)
        return out if self.collective is None else self.collective(out)

    def _add_delta(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out + x A^T B`` for each token's adapter (in place when it can)."""
        state = self.state
        flat = x.reshape(-1, x.shape[-1])  # [T, in]
        if flat.shape[0] != state.num_tokens:
            raise RuntimeError(f"LoRA layer got {flat.shape[0]} tokens but the step declared "
                               f"{state.num_tokens} (begin_step counts).")
        fp32 = self.lora_a32 is not None and flat.shape[0] <= SMALL_STEP_TOKENS
        lora_a, lora_b = (self.lora_a32, self.lora_b32) if fp32 else (self.lora_a, self.lora_b)
        if state.slot is not None:  # one adapter in the step: its slot's buffers as views
            a, b = lora_a[state.slot], lora_b[state.slot]  # [R, in], [R, out]
            h = flat.to(a.dtype) @ a.t()  # [T, R]
            if state.mask is not None:  # some tokens are the base model's
                h.mul_(state.mask[:, 0].to(h.dtype))
        else:
            a, b = (lora_a, lora_b) if state.all_slots else (lora_a[state.slots], lora_b[state.slots])
            n, r = a.shape[0], a.shape[1]
            h = flat.to(a.dtype) @ a.reshape(n * r, -1).t()  # [T, n*R]
            h.view(-1, n, r).mul_(state.mask.to(h.dtype))  # each token keeps its own adapter's columns only
            b = b.reshape(n * r, -1)  # [n*R, out]
        if out.dtype == h.dtype and out.is_contiguous():
            out.view(-1, out.shape[-1]).addmm_(h, b)  # out += h @ b, in place
            return out
        return out.add_((h @ b).view(out.shape)) if out.is_contiguous() else out + (h @ b).view(out.shape).to(out.dtype)
