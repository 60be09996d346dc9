"""The engine's set-up jobs: resolve the device, load the model (plugin, attention backend, linear
kernel) and size the paged KV pool it will attend over.

Under tensor parallelism every rank runs the same two jobs: the model is built with the group's
``tp_rank``/``tp_size`` (read from :func:`heron.distributed.world`), and the KV pool's block count
goes through ``agree`` (the smallest over the ranks) so block ids mean the same everywhere."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from heron.distributed import world
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
from heron.layers.linear_selection import keeps_stored
from heron.loader import build_model

__all__ = ("KVPool", "LoadedModel", "load_and_size", "load_model", "resolve_device", "size_kv_pool")

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


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device for ``--device``: ``auto`` is CUDA when torch sees a GPU, else the CPU.

    Raises:
        ValueError: CUDA asked for but not available (or an unknown device name).
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {name!r}; use cpu, cuda, cuda:N or auto.") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} asks for a GPU but torch sees none (torch {torch.__version__}); "
                             "use --device cpu or auto.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s).")
    elif device.type != "cpu":
        raise ValueError(f"Unsupported device {name!r}; use cpu, cuda, cuda:N or auto.")
    return device


def load_model(checkpoint: Any, config: EngineConfig, *, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    """Build the model plugin, then pick the attention backend its layers need and the linear kernel."""
    # token ids a model may need from the tokenizer (BERT derives segment ids from [SEP])
    special = {"sep_token_id": getattr(checkpoint.tokenizer, "sep_token_id", None)}
    rank, size = world()  # the tensor-parallel group (joined before loading), else (0, 1)
    ctx = ModelContext(dtype=dtype, device=device, attention_backend=None, tp_rank=rank, tp_size=size, extra=special)
    # a kernel computing on the checkpoint's quantized blocks (GGUF) gets them kept, not dequantized
    stored_format = getattr(checkpoint, "stored_format", None)
    linear_cls, linear_why = select_linear_kernel(config.linear_kernel, device, dtype, stored_format)
    keep = keeps_stored(linear_cls, stored_format)
    model = build_model(checkpoint, ctx, model_impl=config.model_impl, keep_stored=keep)
    backend_cls, why = select_attention_backend(config.attention_backend, device, dtype, **attention_needs(model))
    log.info("attention backend: %s", why)
    backend = backend_cls()
    bind_attention_backend(model, backend)
    num_parameters = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
    converted = apply_linear_kernel(model, linear_cls())
    log.info("linear kernel: %s (%d layers converted)", linear_why, converted)
    return LoadedModel(model, backend_cls, backend, linear_cls.name, num_parameters)


def size_kv_pool(loaded: LoadedModel, checkpoint: Any, config: EngineConfig, *, dtype: torch.dtype,
                 device: torch.device, threads: int, agree: Callable[[int], int] | None = None) -> KVPool:
    """Size the paged KV pool (a memory budget or a block count), cap ``max_model_len`` to it, allocate.

    ``agree`` (tensor parallelism) turns this rank's block count into the group's (every rank calls it).
    """
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
    if agree is not None:
        num_blocks = agree(num_blocks)
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


def load_and_size(checkpoint: Any, config: EngineConfig, *, dtype: torch.dtype, device: torch.device, threads: int,
                  group: Any = None) -> tuple[LoadedModel, KVPool]:
    """Both jobs; with a tensor-parallel ``group`` (rank 0's :class:`heron.distributed.group.RankGroup`)
    the ranks check they built alike and agree on the pool's block count (workers do the same)."""
    if device.type == "cpu":  # build (once per machine) or load the fused norm/rotary ops now, not in a request
        from heron.layers.fused_ops import load_fused_ops

        load_fused_ops()
    loaded = load_model(checkpoint, config, dtype=dtype, device=device)
    agree = None
    if group is not None:
        from heron.engine.parallel import agree_on_model, min_over_ranks

        agree_on_model(loaded, group.cpu_group)

        def agree(n: int) -> int:
            return min_over_ranks(n, group.cpu_group)

    pool = size_kv_pool(loaded, checkpoint, config, dtype=dtype, device=device, threads=threads, agree=agree)
    return loaded, pool
