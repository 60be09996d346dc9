"""What ``GET /server_info`` and ``GET /tokenizer_info`` report (see :mod:`heron.server.routes.ops`).

``/server_info`` (dev mode) gives the server's settings with API keys redacted, the engine's
configuration and what it resolved at start (dtype, KV blocks, attention backend, linear kernel,
sleep state), and the ``HERON_*``/``VLLM_*`` environment without variables naming a key, as text
(vLLM's default: ``key=value, ...``) or JSON objects (``?config_format=json``). ``/tokenizer_info``
gives the tokenizer's init settings (its ``tokenizer_config.json``) without file paths, its class
and the chat template, as vLLM does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import heron
from heron.server.errors import APIError
from heron.server.state import ServerState

__all__ = ("server_info", "tokenizer_info")


def _jsonable(value: Any) -> Any:
    """``value`` with tokens (``AddedToken``) as their text and anything else JSON cannot hold as a string."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(getattr(value, "content", None), str):
        return value.content
    return str(value)


def tokenizer_info(tokenizer: Any, chat_template: str | None) -> dict[str, Any]:
    """vLLM's ``/tokenizer_info``: the tokenizer's init settings without file paths, its class, the template."""
    config = dict(getattr(tokenizer, "init_kwargs", None) or {})
    for key in ("vocab_file", "merges_file", "tokenizer_file"):
        config.pop(key, None)
    info = _jsonable(config)
    info["tokenizer_class"] = type(tokenizer).__name__
    if chat_template:
        info["chat_template"] = chat_template
    return info


def _as_dict(obj: Any) -> dict[str, Any] | None:
    return _jsonable(dataclasses.asdict(obj)) if dataclasses.is_dataclass(obj) else None


def _text(config: dict[str, Any] | None) -> str | None:
    """vLLM's text form of a config: ``key=value, ...``."""
    return None if config is None else ", ".join(f"{k}={v!r}" for k, v in config.items())


def _engine_facts(engine: Any) -> dict[str, Any]:
    inner = getattr(engine, "engine", engine)  # AsyncEngine drives an LLMEngine
    sleep = getattr(inner, "sleep_state", None)
    facts = {name: _jsonable(getattr(inner, name, None)) for name in
             ("runner", "dtype", "max_model_len", "num_kv_blocks", "kv_cache_bytes", "linear_kernel", "num_parameters")}
    facts["attention_backend"] = getattr(getattr(inner, "backend", None), "name", None)
    facts["sleep"] = _as_dict(sleep)
    return facts


def server_info(state: ServerState, config_format: str) -> dict[str, Any]:
    """Settings (keys redacted), the engine's config and what it resolved, the environment."""
    if config_format not in ("text", "json"):
        raise APIError(400, f"config_format must be 'text' or 'json', got {config_format!r}.", param="config_format")
    settings = _as_dict(state.settings) or {}
    settings["api_key"] = ["<redacted>"] * len(state.settings.api_key)
    engine = state.engine
    config = _as_dict(getattr(getattr(engine, "engine", engine), "config", None))
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("VLLM_", "HERON_")) and "KEY" not in k}
    pick = (lambda d: d) if config_format == "json" else _text
    return {"version": heron.__version__, "server_settings": pick(settings), "engine_config": pick(config),
            "engine": _engine_facts(engine) if engine is not None else {}, "env": env}
