"""Start the engine the server talks to (a thread-backed :class:`heron.engine.AsyncEngine`)."""

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
    )


def start_engine(settings: ServerSettings) -> tuple[Any, str | None]:
    """Load the model and start the engine loop; returns (engine client, chat template text)."""
    from heron.chat.template import load_template_text
    from heron.engine import AsyncEngine, LLMEngine
    from heron.server.lora import startup_adapters

    engine = LLMEngine(engine_config(settings))
    for lora in startup_adapters(settings):  # --lora-modules: a bad adapter stops the start (LoRAError)
        engine.add_lora(lora)
    template = load_template_text(settings.chat_template) if settings.chat_template else None
    template = template or getattr(engine.tokenizer, "chat_template", None)
    if not template:
        log.warning("the model has no chat template: /v1/chat/completions needs --chat-template")
    # a backstop behind the server's admission (which counts sequences, so never fewer than these)
    bound = settings.max_num_seqs + settings.max_waiting_requests + settings.max_sequences_per_request
    return AsyncEngine(engine, max_open_requests=bound), template
