"""OLMo 2 decoders: Llama with q/k RMSNorms over whole projections and norms after each block.

``q_norm``/``k_norm`` normalise the full q (``H * D``) and k (``Hkv * D``) projections, not each
head, before rope. Each block is ``x + norm(block(x))`` (``post_attention_layernorm``,
``post_feedforward_layernorm``): there are no pre-norms. Under tensor parallelism a rank holds
only its heads' columns of q and k, so :class:`ShardedRMSNorm` takes the mean square over the
whole width from the ranks' summed squares (one all-reduce for q and k together).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heron.distributed import all_reduce
from heron.interfaces import ForwardBatch, ModelContext
from heron.layers import RMSNorm, RotaryTables, tp_of
from heron_plugins.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ("Olmo2Attention", "Olmo2DecoderLayer", "Olmo2ForCausalLM", "ShardedRMSNorm")


class ShardedRMSNorm(nn.Module):
    """RMSNorm over a width split across ranks: this rank holds columns ``[start, start + count)``.

    :meth:`forward` takes the square sum over the whole width (summed over the ranks by the
    caller), so every rank normalises by the same statistic as the unsplit norm.

    Args:
        full_size: the whole width (the checkpoint's weight size).
        start: this rank's first column.
        count: this rank's column count.
        eps: added to the mean square before the square root.
    """

    def __init__(self, full_size: int, start: int, count: int, eps: float) -> None:
        super().__init__()
        self.full_size, self.start, self.eps = full_size, start, eps
        self.weight = nn.Parameter(torch.ones(count))

    def forward(self, x: torch.Tensor, sum_sq: torch.Tensor) -> torch.Tensor:
        """x [T, count], sum_sq [T] fp32 square sum over the whole width -> [T, count] in ``x``'s dtype."""
        scale = torch.rsqrt(sum_sq / self.full_size + self.eps)[:, None]  # [T, 1]
        return self.weight * (x.float() * scale).to(x.dtype)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard: Any = None) -> None:
        with torch.no_grad():
            param.copy_(loaded[self.start : self.start + param.shape[0]])


class Olmo2Attention(LlamaAttention):
    """Llama attention with RMSNorm over the whole q and k projections, before rope."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        eps, size = config.rms_norm_eps, tp_of(ctx)[1]
        self.sharded = size > 1
        if not self.sharded:
            self.q_norm: nn.Module = RMSNorm(self.q_size, eps)
            self.k_norm: nn.Module = RMSNorm(self.kv_size, eps)
            return
        d = self.head_size
        self.q_norm = ShardedRMSNorm(self.total_num_heads * d, self.heads.q_start * d, self.q_size, eps)
        self.k_norm = ShardedRMSNorm(self.total_num_kv_heads * d, self.heads.kv_start * d, self.kv_size, eps)
        # with fewer KV heads than ranks each KV head sits on several ranks: count its squares once
        self.kv_replicas = max(size // self.total_num_kv_heads, 1)

    def project_qk(self, qkv: torch.Tensor) -> torch.Tensor:
        """[T, q_size + 2 * kv_size] -> normed q and k heads side by side: [T, H + Hkv, D]."""
        q = qkv[:, : self.q_size]  # [T, H * D]
        k = qkv[:, self.q_size : self.q_size + self.kv_size]  # [T, Hkv * D]
        if self.sharded:
            sum_sq = torch.stack((q.float().square().sum(-1), k.float().square().sum(-1) / self.kv_replicas), -1)
            all_reduce(sum_sq)  # [T, 2] square sums over the whole q and k widths
            q, k = self.q_norm(q, sum_sq[:, 0]), self.k_norm(k, sum_sq[:, 1])
        else:
            q, k = self.q_norm(q), self.k_norm(k)
        return torch.cat((q, k), dim=-1).view(qkv.shape[0], -1, self.head_size)


class Olmo2DecoderLayer(LlamaDecoderLayer):
    """Attention then gated MLP, each normed on its output before the residual add."""

    attention_cls = Olmo2Attention

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        del self.input_layernorm  # OLMo 2 has no pre-norms
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, rope: RotaryTables, batch: ForwardBatch) -> torch.Tensor:
        hidden = hidden + self.post_attention_layernorm(self.self_attn(hidden, rope, batch))
        return hidden + self.post_feedforward_layernorm(self.mlp(hidden))


class Olmo2ForCausalLM(LlamaForCausalLM):
    """OLMo 2 (``Olmo2ForCausalLM``)."""

    decoder_layer_cls = Olmo2DecoderLayer
    supports_tensor_parallel = True
