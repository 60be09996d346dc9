"""Start the engine the server talks to.

By default the engine runs in its own process (:class:`heron.engine.proc_client.EngineProcClient`),
one per replica with ``--data-parallel-size N`` (behind ``heron.engine.dp_client``'s
``DataParallelClient``); ``--engine-in-process`` keeps it in this process, a thread-backed
:class:`heron.engine.AsyncEngine` (debugging, tests).
"""

from __future__ import annotations

import logging
from typing import Any

from heron.server.settings import ServerSettings

__all__ = ("engine_config", "start_engine")

log = logging.getLogger("heron.server")


def engine_config(settings: ServerSettings) -> Any:
    """The engine settings named by the server's flags."""
    from heron.engine import EngineConfig

    return EngineConfig(
        model=settings.model,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
        num_kv_blocks=settings.num_kv_blocks,
        enable_prefix_caching=settings.enable_prefix_caching,
        model_impl=settings.model_impl,
        runner=settings.runner,
        convert=settings.convert,
        pooler_config=settings.pooler_config or None,
        quantization=settings.quantization,
        attention_backend=settings.attention_backend,
        linear_kernel=getattr(settings, "linear_kernel", "auto"),
        scheduling_policy=getattr(settings, "scheduling_policy", "fcfs"),
        seed=settings.seed,
        max_logprobs=settings.max_logprobs,
        structured_limits=settings.structured_limits(),
        enable_lora=settings.enable_lora,
        max_loras=settings.max_loras,
        max_lora_rank=settings.max_lora_rank,
        max_cpu_loras=settings.max_cpu_loras,
        device=settings.device,
        tensor_parallel_size=settings.tensor_parallel_size,
        nnodes=settings.nnodes,
        node_rank=settings.node_rank,
        master_addr=settings.master_addr,
        master_port=settings.master_port,
        speculative_config=settings.speculative_config,
    )


def start_engine(settings: ServerSettings) -> tuple[Any, str | None]:
    """Load the model and start the engine loop; returns (engine client, chat template text).

    Raises:
        Exception: what building the engine raised (e.g. LoRAError for a bad ``--lora-modules``).
    """
    from heron.chat.template import load_template_text
    from heron.server.lora import startup_adapters

    config = engine_config(settings)
    adapters = startup_adapters(settings)  # --lora-modules: a bad adapter stops the start (LoRAError)
    # a backstop behind the server's admission (which counts sequences, so never fewer than these)
    bound = settings.max_num_seqs + settings.max_waiting_requests + settings.max_sequences_per_request
    in_process = settings.data_parallel_size <= 1 if settings.engine_in_process is None else settings.engine_in_process
    if in_process:
        client = _in_process(config, adapters, bound)
    else:
        client = _engine_processes(settings, config, adapters, bound)
    template = load_template_text(settings.chat_template) if settings.chat_template else None
    template = template or getattr(client.tokenizer, "chat_template", None)
    if not template:
        log.warning("the model has no chat template: /v1/chat/completions needs --chat-template")
    return client, template


def _in_process(config: Any, adapters: list[Any], bound: int) -> Any:
    from heron.engine import AsyncEngine, LLMEngine

    engine = LLMEngine(config)
    for lora in adapters:
        engine.add_lora(lora)
    return AsyncEngine(engine, max_open_requests=bound)


def _engine_processes(settings: ServerSettings, config: Any, adapters: list[Any], bound: int) -> Any:
    """One engine process, or one per data-parallel replica (started together)."""
    from heron.engine.proc_client import EngineProcClient

    options = {"max_open_requests": bound, "lora_modules": adapters, "disabled_plugins": settings.disable_plugins}
    if settings.data_parallel_size <= 1:
        return EngineProcClient(config, **options)
    from heron.engine.dp_client import DataParallelClient, replica_configs

    replicas = replica_configs(config, settings.data_parallel_size)
    clients = [EngineProcClient(c, name=str(i), wait=False, **options) for i, c in enumerate(replicas)]
    try:
        for client in clients:
            client.wait_ready()
    except BaseException:
        for client in clients:
            client.shutdown(timeout=5.0)
        raise
    return DataParallelClient(clients)
