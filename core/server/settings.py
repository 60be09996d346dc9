"""Server settings: one dataclass filled from flags, ``HERON_*`` environment variables and YAML.

Precedence: command-line flag > environment variable > ``--config FILE.yaml`` > default.
Flag names follow vLLM's so deployment recipes carry over.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ("ServerSettings", "add_serve_arguments", "parse_size", "settings_from_args")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"2GiB"`` -> 2147483648, ``"500M"`` -> 500000000, ``"1024"`` -> 1024."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 2GiB, 512MiB or 1000000")
    number, unit, binary = m.groups()
    base = 1024 if binary or unit == "" else 1000
    power = "kmgt".find(unit.lower()) + 1 if unit else 0
    return int(float(number) * base**power)


def _json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"enable_thinking\": false}'")
    return value


@dataclass
class ServerSettings:
    """Everything ``heron serve`` was asked to do."""

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: list[str] = field(default_factory=list)
    served_model_name: list[str] = field(default_factory=list)
    max_model_len: int | None = None
    dtype: str = "auto"
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    kv_cache_memory_bytes: int | None = None
    num_kv_blocks: int | None = None
    enable_prefix_caching: bool = True
    attention_backend: str = "auto"
    linear_kernel: str = "auto"
    seed: int = 0
    chat_template: str | None = None
    default_chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    trust_request_chat_template: bool = False
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    reasoning_content: bool = True  # also send reasoning as ``reasoning_content`` (older clients)
    scheduling_policy: str = "fcfs"
    middleware: list[str] = field(default_factory=list)
    max_logprobs: int = 20
    max_waiting_requests: int = 256
    request_timeout: float | None = None
    enable_request_id_headers: bool = False
    log_requests: bool = False
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    max_request_body_bytes: int = 8 * 1024 * 1024
    drain_timeout: float = 30.0
    disable_plugins: list[str] = field(default_factory=list)

    @property
    def model_names(self) -> list[str]:
        """Names clients may send as ``model``; the first is reported in responses."""
        if self.served_model_name:
            return list(self.served_model_name)
        return [self.model or "SmolLM2-135M-Instruct"]


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The ``heron serve`` flags (defaults come from :class:`ServerSettings`)."""
    S = argparse.SUPPRESS  # unset flags stay absent so env/config can fill them
    p.add_argument("model", nargs="?", default=S, help="checkpoint dir, .gguf file or cached HF id (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--config", default=None, help="YAML file of settings (keys are flag names)")
    p.add_argument("--host", default=S)
    p.add_argument("--port", type=int, default=S)
    p.add_argument("--api-key", action="append", default=S, help="accepted bearer key (repeatable; env HERON_API_KEY, comma-separated)")
    p.add_argument("--served-model-name", nargs="+", default=S)
    p.add_argument("--max-model-len", type=int, default=S)
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=S)
    p.add_argument("--max-num-seqs", type=int, default=S)
    p.add_argument("--max-num-batched-tokens", type=int, default=S)
    p.add_argument("--kv-cache-memory-bytes", type=parse_size, default=S, help="KV cache size, e.g. 2GiB")
    p.add_argument("--num-kv-blocks", type=int, default=S)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=S)
    p.add_argument("--attention-backend", default=S)
    p.add_argument("--linear-kernel", default=S,
                   help="how projections multiply: auto (onednn for bf16 on CPU, else dense), dense, onednn, int4")
    p.add_argument("--seed", type=int, default=S)
    p.add_argument("--chat-template", default=S, help="a Jinja template string or a file path")
    p.add_argument("--default-chat-template-kwargs", type=_json_dict, default=S)
    p.add_argument("--trust-request-chat-template", action="store_true", default=S)
    p.add_argument("--enable-auto-tool-choice", action="store_true", default=S)
    p.add_argument("--tool-call-parser", default=S)
    p.add_argument("--reasoning-parser", default=S)
    p.add_argument("--reasoning-content", action=argparse.BooleanOptionalAction, default=S,
                   help="also send reasoning as 'reasoning_content' for older clients (default on)")
    p.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default=S)
    p.add_argument("--middleware", type=_csv, default=S, help="comma-separated middleware plugin names, applied in order")
    p.add_argument("--max-logprobs", type=int, default=S)
    p.add_argument("--max-waiting-requests", type=int, default=S, help="queue length past which requests get 503")
    p.add_argument("--request-timeout", type=float, default=S, help="seconds before a request is aborted")
    p.add_argument("--enable-request-id-headers", action="store_true", default=S)
    p.add_argument("--log-requests", action="store_true", default=S)
    p.add_argument("--cors-origins", type=_csv, default=S)
    p.add_argument("--max-request-body-bytes", type=parse_size, default=S)
    p.add_argument("--drain-timeout", type=float, default=S, help="seconds SIGTERM waits for in-flight requests")
    p.add_argument("--disable-plugins", type=_csv, default=S, help="hook plugins to disable")


_CONVERT = {
    "api_key": _csv,
    "served_model_name": _csv,
    "middleware": _csv,
    "cors_origins": _csv,
    "disable_plugins": _csv,
    "default_chat_template_kwargs": _json_dict,
    "kv_cache_memory_bytes": parse_size,
    "max_request_body_bytes": parse_size,
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(value, str):
        if name in _CONVERT:
            return _CONVERT[name](value)
        if isinstance(default, bool):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int) or name in ("max_model_len", "max_num_batched_tokens", "num_kv_blocks"):
            return int(value)
        if isinstance(default, float) or name == "request_timeout":
            return float(value)
    return value


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerSettings:
    """Merge flags, ``HERON_*`` environment variables and the ``--config`` YAML file."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get("HERON_CONFIG")
    if config_path:
        import yaml

        with open(config_path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    defaults = ServerSettings()
    for f in fields(ServerSettings):
        env = environ.get(f"HERON_{f.name.upper()}")
        if env is not None:
            values[f.name] = env
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    unknown = set(values) - {f.name for f in fields(ServerSettings)}
    if unknown:
        raise SystemExit(f"heron serve: unknown setting(s) in config: {', '.join(sorted(unknown))}")
    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    return ServerSettings(**coerced)
