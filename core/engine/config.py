"""Engine settings (the offline ``LLM(...)`` keyword arguments and the server's engine flags)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ("EngineConfig", "physical_cores", "release_free_memory")


@dataclass
class EngineConfig:
    """How to load the model and size the engine. ``None`` means "pick a sensible default"."""

    model: str | None = None  # None: the bundled SmolLM2-135M-Instruct
    dtype: str = "auto"  # auto = bf16 on CPUs with native bf16, else fp32
    max_model_len: int | None = None  # default: the model's context length
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None  # default: max(1024, max_num_seqs)
    block_size: int = 16
    kv_cache_memory_bytes: int | None = None  # default: min(512 MiB, a quarter of free RAM)
    num_kv_blocks: int | None = None  # forces the pool size (overrides the memory budget)
    enable_prefix_caching: bool = True
    #: auto = heron's plugin for the architecture when one is installed, else the transformers
    #: fallback; heron (alias vllm) = the plugin only; transformers = the fallback only
    model_impl: str = "auto"
    #: generate (text) or pooling (embeddings, classification); auto decides from the checkpoint
    runner: str = "auto"
    #: how a pooling runner uses the model: embed, classify, or none; auto decides from the checkpoint
    convert: str = "auto"
    #: overrides of the checkpoint's pooling settings (``pooling_type``, ``normalize``, ...)
    pooler_config: dict[str, Any] | None = None
    #: the quantization method the operator expects (vLLM's ``--quantization``); None = whatever
    #: the checkpoint holds. Methods heron cannot run are refused at load.
    quantization: str | None = None
    attention_backend: str = "auto"
    linear_kernel: str = "auto"  # auto: gguf for quantized GGUF files, else the fastest exact one
    scheduling_policy: str = "fcfs"  # or "priority"
    seed: int = 0
    num_threads: int | None = None  # default: physical cores
    device: str = "cpu"  # cpu, cuda (or cuda:N) or auto (cuda when torch sees a GPU)
    max_logprobs: int = 20  # the most top logprobs a request may ask for
    #: bounds on structured-output constraints (heron.structured.StructuredLimits; None: defaults)
    structured_limits: Any = None
    #: LoRA adapters (vLLM's flags): on/off, adapters resident at once, the largest rank, and
    #: adapters kept in memory (None: max_loras)
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    #: tensor parallelism (heron.distributed): ranks the model is split over, machines they span,
    #: this machine's rank and node 0's rendezvous address
    tensor_parallel_size: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29501
    #: CPUs this engine's threads are pinned to (None: all the process may use); data-parallel
    #: replicas each get a share
    cpu_affinity: list[int] | None = None
    #: speculative decoding, vLLM's dictionary: ``{"method": "ngram", "num_speculative_tokens": 4,
    #: "prompt_lookup_min": 2, "prompt_lookup_max": 5}`` or ``{"model": "<draft path>",
    #: "num_speculative_tokens": 3}`` (heron.engine.spec.SpeculativeConfig); None: off
    speculative_config: dict[str, Any] | None = None
    #: fill in output text and end samples at stop strings here; False: outputs carry token ids
    #: only and the caller does both (the engine-process front-end, :mod:`heron.engine.proc_client`)
    detokenize: bool = True


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads do not help matmuls)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            proc = phys = core = None
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    proc = int(value)
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and proc is not None:
                    if proc in allowed:
                        cores.add((phys or "0", core or str(proc)))
                    proc = phys = core = None
            if proc is not None and proc in allowed:
                cores.add((phys or "0", core or str(proc)))
    except OSError:
        pass
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def release_free_memory() -> None:
    """Collect garbage and hand malloc's free pages back to the OS (glibc ``malloc_trim``).

    Loading a checkpoint frees hundreds of MiB (dequantized fp32 tensors, parsed metadata) that
    glibc would otherwise keep mapped; resident memory is what operators budget.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
