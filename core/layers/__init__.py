"""Torch building blocks for model plugins: norms, rotary embeddings, gated MLPs, the attention
layer that hands work to the chosen backend, mixture-of-experts blocks, tensor-parallel
projections and embeddings, KV-cache allocation and backend selection."""

from heron.layers.activation import ActAndMul, GatedMLP, GeluAndMul, SiluAndMul, get_act_fn
from heron.layers.attention import Attention
from heron.layers.backend_selection import (
    UnsupportedBackendError,
    backend_preference,
    select_attention_backend,
)
from heron.layers.kv_cache import (
    allocate_kv_caches,
    attention_layers,
    attention_needs,
    bind_attention_backend,
)
from heron.layers.linear_selection import (
    UnsupportedLinearKernelError,
    apply_linear_kernel,
    select_linear_kernel,
)
from heron.layers.moe import MixtureOfExperts, StackedExperts, load_expert_weights
from heron.layers.norm import GemmaRMSNorm, LayerNorm, RMSNorm
from heron.layers.parallel import (
    ColumnParallelLinear,
    HeadShard,
    MergedColumnParallelLinear,
    ParallelLMHead,
    ParallelOutput,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    load_parameter,
    shard_heads,
    shard_range,
    split_sizes,
    tp_of,
)
from heron.layers.pooler import POOLING_TYPES, pool_hidden, rows_needed
from heron.layers.rotary import (
    ROPE_TYPES,
    RotaryEmbedding,
    RotaryTables,
    apply_rotary,
    get_rope,
    rope_parameters,
    rotary_tables,
    rotate_heads,
)

__all__ = (
    "POOLING_TYPES",
    "ROPE_TYPES",
    "ActAndMul",
    "ColumnParallelLinear",
    "HeadShard",
    "MergedColumnParallelLinear",
    "ParallelLMHead",
    "ParallelOutput",
    "QKVParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
    "load_parameter",
    "shard_heads",
    "shard_range",
    "split_sizes",
    "tp_of",
    "Attention",
    "GatedMLP",
    "GeluAndMul",
    "GemmaRMSNorm",
    "LayerNorm",
    "MixtureOfExperts",
    "RMSNorm",
    "RotaryEmbedding",
    "RotaryTables",
    "SiluAndMul",
    "StackedExperts",
    "UnsupportedBackendError",
    "UnsupportedLinearKernelError",
    "apply_linear_kernel",
    "allocate_kv_caches",
    "apply_rotary",
    "attention_layers",
    "attention_needs",
    "bind_attention_backend",
    "get_act_fn",
    "backend_preference",
    "get_rope",
    "load_expert_weights",
    "pool_hidden",
    "rope_parameters",
    "rotary_tables",
    "rotate_heads",
    "rows_needed",
    "select_attention_backend",
    "select_linear_kernel",
)
