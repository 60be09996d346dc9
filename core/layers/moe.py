"""Sparse mixture-of-experts feed-forward block (Mixtral, Qwen2-MoE, Qwen3-MoE) and its weight loading.

A router (``nn.Linear`` hidden -> experts) scores every token; the softmax (fp32) picks the top-k
experts, whose weights are renormalised to sum to one when the model says so. The experts' weights
are stacked (``gate_up_proj`` ``[E, 2I, H]``, ``down_proj`` ``[E, H, I]``, the layout transformers
5.x uses): the forward pass groups the flat batch's (token, expert) pairs by expert and runs each
expert that has tokens once over all of them, then gathers the weighted results back per token.
An optional shared expert (Qwen2-MoE) is a dense gated MLP scaled by ``sigmoid(shared_expert_gate(x))``.
Tensor parallel: the router (and the shared expert's gate) is replicated; every expert's
intermediate dimension is split over the ranks (gate/up rows, down columns), so each rank computes
partial expert outputs, weights them by the routing weights, adds its partial shared expert, and
the block sums the ranks with ONE all-reduce after the combine (everything before it is linear in
the down projections' outputs).
Checkpoints store experts either stacked or one module per expert (``experts.N.w1``/``w2``/``w3``,
``experts.N.gate_proj``/``up_proj``/``down_proj``): :func:`load_expert_weights` accepts both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from heron.distributed import all_reduce
from heron.layers.activation import GatedMLP, get_act_fn
from heron.layers.parallel import shard_range

__all__ = ("MixtureOfExperts", "StackedExperts", "load_expert_weights")

# per-expert checkpoint names: Mixtral's w1/w3/w2 and Qwen's gate/up/down are the same three matrices
_EXPERT_TENSOR = re.compile(r"^(.*)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
_PROJ = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up", "w2": "down", "down_proj": "down"}


class StackedExperts(nn.Module):
    """``num_experts`` gated MLPs whose weights are stacked into two parameters.

    Args:
        num_experts: E.
        hidden_size: H.
        intermediate_size: I, the width of one expert (full, before any split).
        activation: the HF name of the gate's activation (``hidden_act``).
        rank, size: tensor-parallel rank and size: this rank holds ``I_r`` of the ``I`` intermediate
            rows of every expert and its outputs are partial sums (the caller all-reduces them).
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, activation: str = "silu", *,
                 rank: int = 0, size: int = 1) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.full_intermediate_size = intermediate_size
        #: (first intermediate row of this rank in the full expert, local row count I_r)
        self.span = shard_range(intermediate_size, rank, size)
        self.intermediate_size = local = self.span[1]
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * local, hidden_size))  # [E, 2I_r, H]
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, local))  # [E, H, I_r]
        self.act = get_act_fn(activation)

    def expert_forward(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """Run expert ``expert`` over the tokens routed to it: [n, H] -> [n, H]."""
        gate, up = F.linear(x, self.gate_up_proj[expert]).chunk(2, dim=-1)  # [n, I] each
        return F.linear(self.act(gate) * up, self.down_proj[expert])

    def forward(self, x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """Weighted sum of each token's chosen experts.

        Args:
            x: [T, H] tokens.
            topk_weights: [T, k] routing weights, in ``x``'s dtype.
            topk_ids: [T, k] chosen experts.

        Returns:
            [T, H].
        """
        t, k = topk_ids.shape
        flat_ids = topk_ids.flatten()  # [T * k]
        order = flat_ids.argsort(stable=True)  # (token, slot) pairs grouped by expert
        routed = x[order // k]  # [T * k, H] each pair's token, grouped by expert
        weights = topk_weights.flatten()[order, None]  # [T * k, 1]
        counts = torch.bincount(flat_ids, minlength=self.num_experts).tolist()
        outs, start = [], 0
        for expert, n in enumerate(counts):
            if n == 0:
                continue  # an expert no token chose costs nothing
            rows = slice(start, start + n)
            outs.append(self.expert_forward(expert, routed[rows]) * weights[rows])  # [n, H]
            start += n
        if not outs:
            return torch.zeros_like(x)
        # back to (token, slot) order with one gather, then sum each token's k slots: no index_add_,
        # whose small parallel regions cost milliseconds each on a busy CPU
        return torch.cat(outs)[order.argsort()].view(t, k, -1).sum(dim=1)

    def load_expert(self, expert: int, proj: str, tensor: torch.Tensor) -> None:
        """Copy this rank's slice of one expert's full ``"gate"`` / ``"up"`` ([I, H]) or ``"down"``
        ([H, I]) matrix into the stack."""
        start, count = self.span
        with torch.no_grad():
            if proj == "down":
                self.down_proj[expert].copy_(tensor[:, start : start + count])
            else:
                local = 0 if proj == "gate" else count
                self.gate_up_proj[expert, local : local + count].copy_(tensor[start : start + count])

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: Any = None) -> None:
        """Copy this rank's slice of a full stacked tensor (``gate_up_proj`` ``[E, 2I, H]``, ``down_proj``
        ``[E, H, I]``, transformers 5.x's layout) into ``param``; a tensor that already is ``param``
        (what :func:`load_expert_weights` yields for stacks it filled) is left as it is."""
        if loaded.data_ptr() == param.data_ptr() and loaded.shape == param.shape:
            return
        start, count = self.span
        full = self.full_intermediate_size
        with torch.no_grad():
            if param is self.down_proj:
                param.copy_(loaded[..., start : start + count])
            else:
                param[:, :count].copy_(loaded[:, start : start + count])
                param[:, count:].copy_(loaded[:, full + start : full + start + count])


class MixtureOfExperts(nn.Module):
    """Top-k routed experts, plus an optional sigmoid-gated shared expert.

    Parameter names follow transformers 5.x (``gate.weight``, ``experts.gate_up_proj``,
    ``experts.down_proj``, ``shared_expert.*``, ``shared_expert_gate.weight``).

    Args:
        hidden_size: H.
        num_experts: E.
        top_k: experts per token.
        intermediate_size: width of one routed expert.
        renormalize: divide the top-k weights by their sum (Mixtral always; Qwen's ``norm_topk_prob``).
        activation: the HF name of the experts' activation.
        shared_expert_intermediate_size: width of the shared expert; 0 for none.
        rank, size: tensor-parallel rank and size (the experts' and the shared expert's
            intermediate widths split; the block all-reduces once, after combining them).
    """

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        intermediate_size: int,
        renormalize: bool,
        activation: str = "silu",
        shared_expert_intermediate_size: int = 0,
        *,
        rank: int = 0,
        size: int = 1,
    ) -> None:
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, {num_experts}] (the number of experts), not {top_k}.")
        self.top_k = top_k
        self.renormalize = renormalize
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = StackedExperts(num_experts, hidden_size, intermediate_size, activation, rank=rank, size=size)
        self.shared_expert: GatedMLP | None = None
        self.shared_expert_gate: nn.Linear | None = None
        if shared_expert_intermediate_size > 0:
            self.shared_expert = GatedMLP(hidden_size, shared_expert_intermediate_size, activation=activation,
                                          rank=rank, size=size)
            # its down projection's partial sums join the experts' before the block's one all-reduce
            self.shared_expert.down_proj.tp_output = None
            self.shared_expert_gate = nn.Linear(hidden_size, 1, bias=False)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, H] -> (top-k weights [T, k] in ``x``'s dtype, expert ids [T, k])."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)  # [T, E] fp32
        weights, ids = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[T, H] -> [T, H]."""
        out = self.experts(x, *self.route(x))  # [T, H], this rank's partial sum
        if self.shared_expert is not None and self.shared_expert_gate is not None:
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return all_reduce(out)  # identity without tensor parallelism


def load_expert_weights(
    model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Load per-expert checkpoint tensors into ``model``'s stacked experts; pass the rest through.

    Wrap a model's weight stream with it: ``experts.N.{w1,w3,w2}`` and
    ``experts.N.{gate,up,down}_proj`` tensors are copied straight into the matching
    :class:`StackedExperts`, every other tensor (stacked ``experts.gate_up_proj`` ones included) is
    yielded unchanged. Once the stream ends, each stack filled this way is yielded as itself (a
    no-op copy), so a loader that checks every parameter was set counts it.

    Raises:
        KeyError: a per-expert tensor names no stacked experts of ``model``.
        ValueError: a stack received some per-expert tensors but not all of them.
    """
    stacks = {name: m for name, m in model.named_modules() if isinstance(m, StackedExperts)}
    seen: dict[str, set[tuple[int, str]]] = {}
    for name, tensor in weights:
        match = _EXPERT_TENSOR.match(name)
        if match is None:
            yield name, tensor
            continue
        prefix, expert, proj = f"{match[1]}.experts", int(match[2]), _PROJ[match[3]]
        if prefix not in stacks:
            raise KeyError(f"Checkpoint tensor {name!r} has no matching experts in {type(model).__name__}.")
        stacks[prefix].load_expert(expert, proj, tensor)
        seen.setdefault(prefix, set()).add((expert, proj))
    for prefix, got in seen.items():
        stack = stacks[prefix]
        lacking = {(e, p) for e in range(stack.num_experts) for p in ("gate", "up", "down")} - got
        if lacking:
            listed = ", ".join(f"expert {e} {p}" for e, p in sorted(lacking))
            raise ValueError(f"The checkpoint lacks tensors of {prefix}: {listed}.")
        yield f"{prefix}.gate_up_proj", stack.gate_up_proj.detach()
        yield f"{prefix}.down_proj", stack.down_proj.detach()
