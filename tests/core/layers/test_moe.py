"""The mixture-of-experts layer matches a naive per-token reference and skips idle experts.

The reference routes one token at a time, runs its chosen experts from per-expert gate/up/down
matrices sliced out of the stacks, and adds the shared expert; the layer must agree in fp32 with
and without renormalised top-k weights. Per-expert checkpoint tensors (Mixtral and Qwen names)
load into the stacks, and a missing one is named.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heron.layers.moe import MixtureOfExperts, load_expert_weights

H, E, W = 16, 6, 12


def make_moe(renormalize: bool, shared: int = 0, top_k: int = 2, num_experts: int = E) -> MixtureOfExperts:
    torch.manual_seed(0)
    moe = MixtureOfExperts(H, num_experts, top_k, W, renormalize, shared_expert_intermediate_size=shared)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.5)
    return moe


def naive(moe: MixtureOfExperts, x: torch.Tensor) -> torch.Tensor:
    """Token by token: softmax over experts, top-k, optional renormalisation, weighted expert sum."""
    rows = []
    for token in x:
        probs = torch.softmax(moe.gate.weight @ token, dim=-1)
        weights, ids = probs.topk(moe.top_k)
        if moe.renormalize:
            weights = weights / weights.sum()
        out = torch.zeros(H)
        for w, e in zip(weights, ids.tolist(), strict=True):
            gate_w, up_w = moe.experts.gate_up_proj[e].split(W)
            out += w * (moe.experts.down_proj[e] @ (F.silu(gate_w @ token) * (up_w @ token)))
        if moe.shared_expert is not None:
            mlp = moe.shared_expert
            gate, up = (mlp.gate_up_proj.weight @ token).chunk(2)
            out += torch.sigmoid(moe.shared_expert_gate.weight @ token) * (mlp.down_proj.weight @ (F.silu(gate) * up))
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("shared", [0, 20])
def test_matches_naive_per_token_reference(renormalize, shared):
    moe = make_moe(renormalize, shared)
    x = torch.randn(37, H, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got, want = moe(x), naive(moe, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_renormalize_changes_the_result():
    x = torch.randn(5, H, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert not torch.allclose(make_moe(True)(x), make_moe(False)(x))


def test_each_active_expert_runs_once_and_idle_experts_are_skipped():
    moe = make_moe(True, top_k=1, num_experts=8)
    x = torch.randn(3, H, generator=torch.Generator().manual_seed(3))  # 3 tokens reach at most 3 of 8 experts
    _, ids = moe.route(x)
    calls: list[tuple[int, int]] = []
    real = moe.experts.expert_forward

    def spy(expert: int, tokens: torch.Tensor) -> torch.Tensor:
        calls.append((expert, tokens.shape[0]))
        return real(expert, tokens)

    with mock.patch.object(moe.experts, "expert_forward", side_effect=spy), torch.inference_mode():
        moe(x)
    active = ids.flatten().tolist()
    assert sorted(e for e, _ in calls) == sorted(set(active))  # once each, idle ones never
    assert all(n == active.count(e) for e, n in calls)  # over all of its tokens at once
    assert len(calls) < 8


def test_empty_batch():
    with torch.inference_mode():
        assert make_moe(True, 20)(torch.zeros(0, H)).shape == (0, H)


def test_top_k_above_expert_count_is_refused():
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfExperts(H, 4, 5, W, True)


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = make_moe(True)


@pytest.mark.parametrize("names", [("w1", "w3", "w2"), ("gate_proj", "up_proj", "down_proj")])
def test_per_expert_tensors_load_into_the_stacks(names):
    src, dst = _Holder(), _Holder()
    with torch.no_grad():
        for p in dst.mlp.experts.parameters():
            p.zero_()
    tensors = []
    for e in range(E):
        gate, up = src.mlp.experts.gate_up_proj[e].split(W)
        for name, t in zip(names, (gate, up, src.mlp.experts.down_proj[e]), strict=True):
            tensors.append((f"mlp.experts.{e}.{name}.weight", t.detach().clone()))
    passed = list(load_expert_weights(dst, [("mlp.gate.weight", src.mlp.gate.weight), *tensors]))
    assert [n for n, _ in passed] == ["mlp.gate.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    torch.testing.assert_close(dst.mlp.experts.gate_up_proj, src.mlp.experts.gate_up_proj, atol=0, rtol=0)
    torch.testing.assert_close(dst.mlp.experts.down_proj, src.mlp.experts.down_proj, atol=0, rtol=0)


def test_a_missing_expert_tensor_is_named():
    holder = _Holder()
    tensors = [(f"mlp.experts.{e}.{n}.weight", torch.zeros(W, H) if n != "down_proj" else torch.zeros(H, W))
               for e in range(E) for n in ("gate_proj", "up_proj", "down_proj") if (e, n) != (4, "up_proj")]
    with pytest.raises(ValueError, match="mlp.experts: expert 4 up"):
        list(load_expert_weights(holder, tensors))


def test_an_expert_tensor_without_experts_is_refused():
    with pytest.raises(KeyError, match="layers.0.mlp.experts.0.w1.weight"):
        list(load_expert_weights(_Holder(), [("layers.0.mlp.experts.0.w1.weight", torch.zeros(W, H))]))
