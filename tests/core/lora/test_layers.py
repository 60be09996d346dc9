"""LoRALinear adds each token's own adapter delta (fused shards exact) over any linear module, or nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from heron.lora import LoRALinear, LoRAStepState


class _KernelLike(nn.Module):
    """A linear kernel's module: not an nn.Linear, just in/out features and a forward."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = weight.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.packed)


def _shards(gen, rows_list, in_features, rank, out_features=12):
    """Random (rows, A [rank, in], B [rows, rank]) shards."""
    return [(rows, torch.randn(rank, in_features, generator=gen),
             torch.randn(out_features if rows is None else rows[1], rank, generator=gen)) for rows in rows_list]


def test_mixed_tokens_match_a_per_token_reference():
    gen = torch.Generator().manual_seed(0)
    base = _KernelLike(torch.randn(12, 10, generator=gen))
    state = LoRAStepState()
    layer = LoRALinear(base, state, num_slots=3, rank=2, dtype=torch.float32, device=torch.device("cpu"))
    fused = _shards(gen, [(0, 4), (4, 8)], 10, 3)  # two shards of a fused projection, rank 3 each
    whole = _shards(gen, [None], 10, 5)
    layer.grow(6)
    layer.set_slot(0, fused)
    layer.set_slot(2, whole)
    assert layer.rank == 6 and layer.in_features == 10 and layer.out_features == 12  # delegated to the base

    x = torch.randn(7, 10, generator=gen)
    token_slot = [0, None, 2, 2, 0, None, 0]
    state.slots, state.num_tokens = torch.tensor([0, 2]), len(token_slot)
    state.mask = torch.tensor([[1.0 if s == col else 0.0 for col in (0, 2)] for s in token_slot])[:, :, None]
    got = layer(x)
    for t, slot in enumerate(token_slot):
        want = base(x[t])
        for rows, a, b in {0: fused, 2: whole}.get(slot, []):
            start, count = rows or (0, 12)
            want[start : start + count] += b @ (a @ x[t])
        torch.testing.assert_close(got[t], want, rtol=1e-5, atol=1e-5)

    state.slots, state.mask, state.all_slots = torch.tensor([0, 1, 2]), F.one_hot(torch.tensor(
        [0, 1, 2, 2, 0, 1, 0]), 3).float()[:, :, None], True  # every slot: no gather; slot 1 is empty (zeros)
    got_all = layer(x)
    torch.testing.assert_close(got_all, got, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_all[[1, 5]], base(x)[[1, 5]], rtol=0, atol=0)

    # one adapter for every token: its slot's buffers as views, no mask
    state.slots, state.mask, state.all_slots, state.slot = torch.tensor([2]), None, False, 2
    only = layer(x)
    for t in range(len(token_slot)):
        want = base(x[t]) + whole[0][2] @ (whole[0][1] @ x[t])
        torch.testing.assert_close(only[t], want, rtol=1e-5, atol=1e-5)
    state.mask = torch.tensor([1.0, 0, 1, 1, 1, 0, 1])[:, None, None]  # the same adapter and base tokens
    torch.testing.assert_close(layer(x)[[1, 5]], base(x)[[1, 5]], rtol=0, atol=0)


def test_no_adapter_in_the_step_returns_base_output_untouched():
    base = nn.Linear(10, 12)
    layer = LoRALinear(base, LoRAStepState(), 2, 4, torch.float32, torch.device("cpu"))
    layer.set_slot(0, [(None, torch.ones(4, 10), torch.ones(12, 4))])
    x = torch.randn(2, 3, 10)
    assert torch.equal(layer(x), base(x))
    assert layer.weight is base.weight and "base_layer.weight" in dict(layer.named_parameters())
