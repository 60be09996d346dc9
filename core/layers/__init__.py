"""Torch building blocks for model plugins: norms, rotary embeddings, gated MLPs, the attention
layer that hands work to the chosen backend, KV-cache allocation and backend selection."""

from heron.layers.activation import GatedMLP, SiluAndMul
from heron.layers.attention import Attention
from heron.layers.backend_selection import (
    UnsupportedBackendError,
    backend_preference,
    select_attention_backend,
)
from heron.layers.kv_cache import allocate_kv_caches, attention_layers
from heron.layers.norm import RMSNorm
from heron.layers.rotary import ROPE_TYPES, RotaryEmbedding, apply_rotary, get_rope, rope_parameters

__all__ = (
    "ROPE_TYPES",
    "Attention",
    "GatedMLP",
    "RMSNorm",
    "RotaryEmbedding",
    "SiluAndMul",
    "UnsupportedBackendError",
    "allocate_kv_caches",
    "apply_rotary",
    "attention_layers",
    "backend_preference",
    "get_rope",
    "rope_parameters",
    "select_attention_backend",
)
