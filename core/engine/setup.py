"""The engine's two set-up jobs: load the model (plugin, attention backend, linear kernel) and size
the paged KV pool it will attend over."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from heron.engine.block_manager import BlockManager
from heron.engine.config import EngineConfig, available_memory_bytes, release_free_memory
from heron.interfaces import AttentionBackend, ModelContext
from heron.layers import (
    allocate_kv_caches,
    apply_linear_kernel,
    attention_layers,
    attention_needs,
    bind_attention_backend,
    select_attention_backend,
    select_linear_kernel,
)
from heron.loader import build_model

__all__ = ("KVPool", "LoadedModel", "load_model", "size_kv_pool")

log = logging.getLogger("heron.engine")

_DEFAULT_KV_BYTES = 512 << 20


@dataclass(slots=True)
class LoadedModel:
    """A built model with its attention backend bound and its linear kernel applied."""

    model: torch.nn.Module
    backend_cls: type[AttentionBackend]
    backend: AttentionBackend
    linear_kernel: str
    num_parameters: int  # the checkpoint's (tied tensors once), counted before kernels repack them


@dataclass(slots=True)
class KVPool:
    """The allocated paged KV pool."""

    num_blocks: int
    nbytes: int
    max_model_len: int  # the config's, lowered to what the pool holds (unless every layer slides)
    sliding_window: int | None  # every layer slides: out-of-window blocks are freed


def load_model(checkpoint: Any, config: EngineConfig, *, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    """Build the model plugin, then pick the attention backend its layers need and the linear kernel."""
    # token ids a model may need from the tokenizer (BERT derives segment ids from [SEP])
    special = {"sep_token_id": getattr(checkpoint.tokenizer, "sep_token_id", None)}
    ctx = ModelContext(dtype=dtype, device=device, attention_backend=None, extra=special)
    linear_cls, linear_why = select_linear_kernel(config.linear_kernel, device, dtype)
    model = build_model(checkpoint, ctx, model_impl=config.model_impl)
    backend_cls, why = select_attention_backend(config.attention_backend, device, dtype, **attention_needs(model))
    log.info("attention backend: %s", why)
    backend = backend_cls()
    bind_attention_backend(model, backend)
    num_parameters = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
    converted = apply_linear_kernel(model, linear_cls())
    log.info("linear kernel: %s (%d layers converted)", linear_why, converted)
    return LoadedModel(model, backend_cls, backend, linear_cls.name, num_parameters)


def size_kv_pool(loaded: LoadedModel, checkpoint: Any, config: EngineConfig, *, dtype: torch.dtype,
                 device: torch.device, threads: int) -> KVPool:
    """Size the paged KV pool (a memory budget or a block count), cap ``max_model_len`` to it, allocate."""
    model_len = checkpoint.max_model_len
    if config.max_model_len is not None and config.max_model_len > model_len:
        raise ValueError(f"max_model_len {config.max_model_len} exceeds the model's context length {model_len}.")
    max_model_len = config.max_model_len or model_len
    bs = config.block_size
    layers = attention_layers(loaded.model)
    block_bytes = sum(
        torch.Size(loaded.backend_cls.kv_cache_shape(1, bs, layer.num_kv_heads, layer.head_size)).numel()
        for layer in layers
    ) * dtype.itemsize
    if config.num_kv_blocks is not None:
        num_blocks = config.num_kv_blocks
    else:
        budget = config.kv_cache_memory_bytes
        if budget is None:
            free = available_memory_bytes()
            budget = min(_DEFAULT_KV_BYTES, free // 4) if free else _DEFAULT_KV_BYTES
        num_blocks = max(1, budget // block_bytes)
    window = BlockManager.sliding_window_of(layers)
    if window is not None:
        needed = -(-window // bs) + 2  # the window's blocks, a partial one, the null block
        if num_blocks < needed:
            raise ValueError(f"The KV cache has {num_blocks} blocks; this sliding-window model needs at least "
                             f"{needed} (raise --kv-cache-memory-bytes or --num-kv-blocks).")
    elif num_blocks * bs < max_model_len:
        log.warning("KV cache holds %d tokens; max_model_len lowered from %d", num_blocks * bs, max_model_len)
        max_model_len = num_blocks * bs
    allocate_kv_caches(loaded.model, loaded.backend_cls, num_blocks, bs, dtype, device)
    release_free_memory()  # loading left freed fp32 tensors and parse buffers in malloc's arenas
    log.info("KV cache: %d blocks x %d tokens (%.1f MiB), dtype %s, %d threads",
             num_blocks, bs, num_blocks * block_bytes / 2**20, dtype, threads)
    return KVPool(num_blocks, num_blocks * block_bytes, max_model_len, window)
