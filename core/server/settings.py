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

from heron.server import vllm_compat

__all__ = ("ServerSettings", "add_serve_arguments", "lora_module", "parse_size", "settings_from_args")

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
    model_impl: str = "auto"
    runner: str = "auto"
    convert: str = "auto"
    pooler_config: dict[str, Any] = field(default_factory=dict)
    quantization: str | None = None
    trust_remote_code: bool = False
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
    # /v1/responses: where stored responses live (heron.response_stores) and the built-in store's bounds
    response_store: str = "memory"
    response_store_max_entries: int = 1000
    response_store_max_bytes: int = 64 * 1024 * 1024
    response_store_max_age: float = 86400.0
    # per-request limits: each is a 400 naming the limit (docs/serving.md, "Limits")
    max_prompts_per_request: int = 1024
    max_n: int = 128
    max_sequences_per_request: int = 1024
    max_stop: int = 64
    max_stop_length: int = 1024
    max_bad_words: int = 128
    max_logit_bias: int = 1024
    max_tools: int = 128
    max_tools_bytes: int = 1024 * 1024
    max_json_depth: int = 64
    # chat-template rendering (heron.chat.RenderLimits)
    max_chat_template_output_chars: int = 32 * 1024 * 1024
    chat_template_render_timeout: float = 5.0
    # structured-output constraints (heron.structured.StructuredLimits; None = its default)
    max_structured_schema_bytes: int | None = None
    max_structured_enum_values: int | None = None
    max_structured_properties: int | None = None
    max_structured_optional_properties: int | None = None
    max_structured_object_optional_properties: int | None = None
    max_structured_literal_chars: int | None = None
    max_structured_regex_chars: int | None = None
    max_structured_grammar_chars: int | None = None
    max_structured_nesting_depth: int | None = None
    structured_compile_timeout: float | None = None
    # vLLM's chat and completions options (docs/serving.md, "Coming from vLLM")
    response_role: str = "assistant"
    chat_template_content_format: str = "auto"  # auto | string | openai
    exclude_tools_when_tool_choice_none: bool = False
    enable_force_include_usage: bool = False
    return_tokens_as_token_ids: bool = False
    # operational endpoints, gated as vLLM gates them
    enable_tokenizer_info_endpoint: bool = False
    server_dev_mode: bool = False  # also VLLM_SERVER_DEV_MODE=1: /reset_prefix_cache, /sleep, /wake_up, /server_info
    enable_sleep_mode: bool = False
    torch_profiler_dir: str | None = None  # also VLLM_TORCH_PROFILER_DIR: /start_profile, /stop_profile
    disable_docs: bool = False
    ui: bool = True  # the chat page at /
    # network (uvicorn): TLS, a root path behind a proxy, a unix socket, logging
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int = 0
    root_path: str = ""
    uds: str | None = None
    uvicorn_log_level: str = "info"
    disable_uvicorn_access_log: bool = False
    max_log_len: int | None = None
    # vLLM's CORS flags: any of them turns the cors middleware on with these settings
    allowed_origins: list[str] | None = None
    allow_credentials: bool = False
    allowed_methods: list[str] | None = None
    allowed_headers: list[str] | None = None
    # metrics: heron's names, vLLM's names (dashboards), or both; scraping without the API key
    metrics_prefix: list[str] = field(default_factory=lambda: ["heron"])
    metrics_no_auth: bool = False
    # LoRA adapters (docs/lora.md): vLLM's flags, plus where untrusted paths may point
    enable_lora: bool = False
    #: adapters registered at start: {"name", "path", "base_model_name"} each (``--lora-modules``)
    lora_modules: list[dict[str, Any]] = field(default_factory=list)
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    #: the only directories ``/v1/load_lora_adapter`` may load from (none: runtime loading refused)
    allowed_lora_dirs: list[str] = field(default_factory=list)
    #: the built-in ``directory`` resolver looks for ``<dir>/<adapter name>`` (unset: it finds nothing)
    lora_resolver_dir: str | None = None
    # processes and parallelism (docs/distributed.md)
    #: run the engine loop in the HTTP server's process (a thread) instead of an engine process;
    #: None: in-process unless --data-parallel-size > 1 (one process holds half the memory of two)
    engine_in_process: bool | None = None
    data_parallel_size: int = 1  # engine replicas, each its own process, KV pool and share of the cores
    tensor_parallel_size: int = 1  # ranks one model is split over (torch.distributed)
    nnodes: int = 1  # machines the tensor-parallel ranks span
    node_rank: int = 0  # this machine's place among them (0 serves HTTP)
    master_addr: str = "127.0.0.1"  # rank 0's address for torch.distributed's rendezvous
    master_port: int = 29501
    headless: bool = False  # run this node's workers only (no HTTP); implied by --node-rank > 0
    device: str = "cpu"  # cpu, cuda or auto (cuda when torch sees a GPU)
    distributed_executor_backend: str = "mp"  # mp (processes) or uni (one process, tensor parallel 1)
    #: serve /v1/load_lora_adapter and /v1/unload_lora_adapter (also VLLM_ALLOW_RUNTIME_LORA_UPDATING)
    allow_runtime_lora_updating: bool = False
    #: speculative decoding, vLLM's JSON (heron.engine.spec.SpeculativeConfig); None: off
    speculative_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # YAML files and direct construction may give "name=path" strings: one form from here on
        self.lora_modules = [lora_module(m) for m in self.lora_modules]

    def render_limits(self) -> Any:
        """The chat-template bounds these settings ask for."""
        from heron.chat import RenderLimits

        return RenderLimits(max_output_chars=self.max_chat_template_output_chars,
                            timeout_s=self.chat_template_render_timeout)

    def structured_limits(self) -> Any:
        """The structured-output bounds these settings ask for (unset flags keep the defaults)."""
        from heron.structured import StructuredLimits

        given = {field: getattr(self, flag) for flag, field in _STRUCTURED_LIMITS.items()}
        return StructuredLimits(**{k: v for k, v in given.items() if v is not None})

    @property
    def model_names(self) -> list[str]:
        """Names clients may send as ``model``; the first is reported in responses."""
        if self.served_model_name:
            return list(self.served_model_name)
        return [self.model or "SmolLM2-135M-Instruct"]


#: ``--max-structured-*`` flags -> StructuredLimits fields
_STRUCTURED_LIMITS = {
    "max_structured_schema_bytes": "max_schema_bytes",
    "max_structured_enum_values": "max_enum_values",
    "max_structured_properties": "max_properties",
    "max_structured_optional_properties": "max_optional_properties",
    "max_structured_object_optional_properties": "max_object_optional_properties",
    "max_structured_literal_chars": "max_literal_chars",
    "max_structured_regex_chars": "max_regex_chars",
    "max_structured_grammar_chars": "max_grammar_chars",
    "max_structured_nesting_depth": "max_nesting_depth",
    "structured_compile_timeout": "compile_timeout_s",
}


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _json_or_csv(text: str) -> list[str]:
    """vLLM writes list flags as JSON (``'["*"]'``); a comma-separated list works too."""
    text = text.strip()
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list):
            raise argparse.ArgumentTypeError("must be a JSON list")
        return [str(v) for v in value]
    return _csv(text)


def lora_module(spec: str | dict[str, Any]) -> dict[str, Any]:
    """One ``--lora-modules`` item as ``{"name", "path", "base_model_name"}``.

    Accepts vLLM's two forms: ``name=path`` and the JSON object
    ``{"name": "a", "path": "/x", "base_model_name": "m"}`` (or that object already parsed).
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            spec = _json_dict(text)
        else:
            name, sep, path = text.partition("=")
            if not (sep and name.strip() and path.strip()):
                raise argparse.ArgumentTypeError(f"{spec!r} is not an adapter; use name=path or "
                                                 '\'{"name": "a", "path": "/adapters/a"}\'')
            spec = {"name": name.strip(), "path": path.strip()}
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError(f"{spec!r} is not an adapter; use name=path or a JSON object")
    unknown = set(spec) - {"name", "path", "base_model_name"}
    if unknown or not isinstance(spec.get("name"), str) or not isinstance(spec.get("path"), str) \
            or not spec["name"] or not spec["path"]:
        raise argparse.ArgumentTypeError(f"{spec!r}: an adapter needs string 'name' and 'path' (and optionally "
                                         "'base_model_name'), nothing else")
    return {"name": spec["name"], "path": spec["path"], "base_model_name": spec.get("base_model_name")}


def _speculative_config(text: str) -> dict[str, Any] | None:
    """``--speculative-config``: vLLM's JSON object; ``none``, ``null`` or ``{}`` turn it off."""
    if text.strip().lower() in ("", "none", "null"):
        return None
    return _json_dict(text) or None


def _lora_modules(text: str) -> list[dict[str, Any]]:
    """``HERON_LORA_MODULES``: a JSON list or object, or comma-separated ``name=path`` items."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
        if not isinstance(items, list):
            raise argparse.ArgumentTypeError("must be a JSON list of adapters")
        return [lora_module(item) for item in items]
    if text.startswith("{"):
        return [lora_module(text)]
    return [lora_module(item) for item in _csv(text)]


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The ``heron serve`` flags (defaults come from :class:`ServerSettings`)."""
    S = argparse.SUPPRESS  # unset flags stay absent so env/config can fill them
    p.add_argument("model", nargs="?", default=S, help="checkpoint dir, .gguf file or cached HF id (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--config", default=None, help="YAML file of settings (keys are flag names)")
    p.add_argument("--host", default=S)
    p.add_argument("--port", type=int, default=S)
    p.add_argument("--api-key", action="append", default=S, help="accepted bearer key (repeatable; env HERON_API_KEY, comma-separated; or VLLM_API_KEY)")
    p.add_argument("--served-model-name", nargs="+", default=S)
    p.add_argument("--max-model-len", type=int, default=S)
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=S)
    p.add_argument("--max-num-seqs", type=int, default=S)
    p.add_argument("--max-num-batched-tokens", type=int, default=S)
    p.add_argument("--kv-cache-memory-bytes", type=parse_size, default=S, help="KV cache size, e.g. 2GiB")
    p.add_argument("--num-kv-blocks", type=int, default=S)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=S)
    p.add_argument("--model-impl", choices=["auto", "heron", "transformers", "vllm"], default=S,
                   help="auto: heron's plugin for the architecture, else the transformers fallback; "
                        "heron (alias vllm): the plugin only; transformers: the fallback only")
    p.add_argument("--runner", choices=["auto", "generate", "pooling"], default=S,
                   help="generate text, or pool (embeddings, classification, scores); auto decides from the checkpoint")
    p.add_argument("--convert", choices=["auto", "embed", "classify", "none"], default=S,
                   help="how a pooling runner uses the model (auto: classify for *ForSequenceClassification, else embed)")
    p.add_argument("--pooler-config", type=_json_dict, default=S,
                   help='JSON overrides of the pooling settings, e.g. \'{"pooling_type": "MEAN", "normalize": false}\'')
    p.add_argument("--quantization", "-q", default=S,
                   help="the checkpoint's quantization method; heron refuses methods it cannot run")
    p.add_argument("--trust-remote-code", action="store_true", default=S,
                   help="accepted for vLLM command lines; heron never runs a checkpoint's own code")
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
    p.add_argument("--max-waiting-requests", type=int, default=S,
                   help="sequences (prompts x n) waiting beyond --max-num-seqs past which requests get 503")
    p.add_argument("--request-timeout", type=float, default=S, help="seconds before a request is aborted")
    p.add_argument("--enable-request-id-headers", action="store_true", default=S)
    p.add_argument("--log-requests", action="store_true", default=S)
    p.add_argument("--cors-origins", type=_csv, default=S)
    p.add_argument("--max-request-body-bytes", type=parse_size, default=S)
    p.add_argument("--drain-timeout", type=float, default=S, help="seconds SIGTERM waits for in-flight requests")
    p.add_argument("--disable-plugins", type=_csv, default=S, help="hook plugins to disable")
    store = p.add_argument_group("responses store", "where /v1/responses keeps responses sent with store: true")
    store.add_argument("--response-store", default=S, help="a heron.response_stores plugin (default: memory, "
                       "bounded and in-process; nothing survives a restart)")
    store.add_argument("--response-store-max-entries", type=int, default=S, help="responses kept (oldest evicted first)")
    store.add_argument("--response-store-max-bytes", type=parse_size, default=S, help="their total size as JSON, e.g. 64MiB")
    store.add_argument("--response-store-max-age", type=float, default=S, help="seconds a stored response is kept")
    lim = p.add_argument_group("request limits", "each one refused with a 400 naming the limit")
    lim.add_argument("--max-prompts-per-request", type=int, default=S, help="prompts in one /v1/completions request")
    lim.add_argument("--max-n", type=int, default=S, help="largest n (samples per prompt)")
    lim.add_argument("--max-sequences-per-request", type=int, default=S, help="prompts x n of one request")
    lim.add_argument("--max-stop", type=int, default=S, help="stop strings (and stop_token_ids) per request")
    lim.add_argument("--max-stop-length", type=int, default=S, help="characters of one stop string")
    lim.add_argument("--max-bad-words", type=int, default=S, help="bad_words entries per request")
    lim.add_argument("--max-logit-bias", type=int, default=S, help="logit_bias entries per request")
    lim.add_argument("--max-tools", type=int, default=S, help="tools per chat request")
    lim.add_argument("--max-tools-bytes", type=parse_size, default=S, help="size of a request's tools as JSON")
    lim.add_argument("--max-json-depth", type=int, default=S, help="nesting depth of a request body")
    lim.add_argument("--max-chat-template-output-chars", type=int, default=S,
                     help="characters one chat-template render may produce (default 32Mi)")
    lim.add_argument("--chat-template-render-timeout", type=float, default=S,
                     help="seconds one chat-template render may take (default 5)")
    for flag, field_name in _STRUCTURED_LIMITS.items():
        kind = float if field_name.endswith("_s") else int
        lim.add_argument("--" + flag.replace("_", "-"), type=kind, default=S,
                         help=f"structured outputs: StructuredLimits.{field_name}")
    compat = p.add_argument_group("vLLM chat and completions options")
    compat.add_argument("--response-role", default=S, help="the role of generated chat messages (default assistant)")
    compat.add_argument("--chat-template-content-format", choices=["auto", "string", "openai"], default=S,
                        help="how message content reaches the template: a string, or OpenAI's list of parts")
    compat.add_argument("--exclude-tools-when-tool-choice-none", action="store_true", default=S,
                        help="do not render tools into the prompt when tool_choice is none")
    compat.add_argument("--enable-force-include-usage", action="store_true", default=S,
                        help="usage in every stream, as if stream_options.include_usage were set")
    compat.add_argument("--return-tokens-as-token-ids", action="store_true", default=S,
                        help="logprobs name tokens as 'token_id:N'")
    ops = p.add_argument_group("operational endpoints")
    ops.add_argument("--enable-tokenizer-info-endpoint", action="store_true", default=S, help="serve /tokenizer_info")
    ops.add_argument("--server-dev-mode", action="store_true", default=S,
                     help="serve /reset_prefix_cache, /sleep, /wake_up, /is_sleeping, /server_info (also VLLM_SERVER_DEV_MODE=1)")
    ops.add_argument("--enable-sleep-mode", action="store_true", default=S, help="allow /sleep to free memory")
    ops.add_argument("--torch-profiler-dir", default=S,
                     help="serve /start_profile and /stop_profile, writing traces here (also VLLM_TORCH_PROFILER_DIR)")
    ops.add_argument("--disable-docs", action="store_true", default=S, help="no /docs, /openapi.json pages")
    ops.add_argument("--ui", action=argparse.BooleanOptionalAction, default=S, help="the chat page at / (default on)")
    net = p.add_argument_group("network")
    net.add_argument("--ssl-keyfile", default=S)
    net.add_argument("--ssl-certfile", default=S)
    net.add_argument("--ssl-ca-certs", default=S)
    net.add_argument("--ssl-cert-reqs", type=int, default=S, help="0 none, 1 optional, 2 required (client certificates)")
    net.add_argument("--root-path", default=S, help="the path prefix a proxy serves this server under")
    net.add_argument("--uds", default=S, help="listen on this unix socket instead of host:port")
    net.add_argument("--uvicorn-log-level", choices=["critical", "error", "warning", "info", "debug", "trace"],
                     default=S)
    net.add_argument("--disable-uvicorn-access-log", action="store_true", default=S)
    net.add_argument("--max-log-len", type=int, default=S, help="characters of a prompt shown in request logs")
    net.add_argument("--allowed-origins", type=_json_or_csv, default=S, help="CORS origins (turns CORS on)")
    net.add_argument("--allow-credentials", action="store_true", default=S, help="CORS credentials (turns CORS on)")
    net.add_argument("--allowed-methods", type=_json_or_csv, default=S, help="CORS methods (turns CORS on)")
    net.add_argument("--allowed-headers", type=_json_or_csv, default=S, help="CORS headers (turns CORS on)")
    mets = p.add_argument_group("metrics")
    mets.add_argument("--metrics-prefix", type=_csv, default=S, help="heron, vllm or heron,vllm: the metric names /metrics uses")
    mets.add_argument("--metrics-no-auth", action="store_true", default=S, help="/metrics without the API key")
    lora = p.add_argument_group("LoRA adapters", "many adapters over one base model; a request picks one by 'model'")
    lora.add_argument("--enable-lora", action="store_true", default=S, help="serve LoRA adapters")
    lora.add_argument("--lora-modules", nargs="+", action="extend", type=lora_module, default=S,
                      help='adapters to load at start: name=path, or \'{"name": "a", "path": "/x", '
                           '"base_model_name": "m"}\'')
    lora.add_argument("--max-loras", type=int, default=S, help="adapters resident at once (default 1)")
    lora.add_argument("--max-lora-rank", type=int, default=S, help="the largest adapter rank (default 16)")
    lora.add_argument("--max-cpu-loras", type=int, default=S, help="adapters kept in memory (default: --max-loras)")
    lora.add_argument("--allowed-lora-dirs", type=_csv, default=S,
                      help="comma-separated directories /v1/load_lora_adapter may load from (none: refused)")
    lora.add_argument("--lora-resolver-dir", default=S,
                      help="the built-in 'directory' resolver serves <dir>/<name> when a request names it")
    lora.add_argument("--allow-runtime-lora-updating", action="store_true", default=S,
                      help="serve /v1/load_lora_adapter and /v1/unload_lora_adapter (as VLLM_ALLOW_RUNTIME_LORA_UPDATING)")
    par = p.add_argument_group("processes and parallelism", "engine process, data and tensor parallelism, "
                               "several machines (docs/distributed.md)")
    par.add_argument("--engine-in-process", action=argparse.BooleanOptionalAction, default=S,
                     help="run the engine loop as a thread of the HTTP server's process (the default with one replica; "
                          "--no-engine-in-process gives it its own process)")
    par.add_argument("--data-parallel-size", "-dp", type=int, default=S,
                     help="engine replicas, each its own process with its own KV pool and share of the cores")
    par.add_argument("--tensor-parallel-size", "-tp", type=int, default=S,
                     help="processes one model is split over (torch.distributed: gloo on CPU, NCCL on GPU)")
    par.add_argument("--nnodes", "-n", type=int, default=S, help="machines the tensor-parallel ranks span")
    par.add_argument("--node-rank", "-r", type=int, default=S, help="this machine's rank (0 serves HTTP)")
    par.add_argument("--master-addr", default=S, help="node 0's address for the rendezvous (default 127.0.0.1)")
    par.add_argument("--master-port", type=int, default=S, help="node 0's rendezvous port (default 29501)")
    par.add_argument("--headless", action=argparse.BooleanOptionalAction, default=S, help="run this node's workers, no HTTP server")
    par.add_argument("--device", choices=["auto", "cpu", "cuda"], default=S,
                     help="where the model, KV pool and sampler live (auto: cuda when torch sees a GPU)")
    spec = p.add_argument_group("speculative decoding", "draft tokens verified in one forward (docs/performance.md)")
    spec.add_argument("--speculative-config", type=_speculative_config, default=S,
                      help='vLLM\'s JSON: \'{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, '
                           '"prompt_lookup_max": 8}\' or \'{"model": "DRAFT_PATH", "num_speculative_tokens": 3}\'')
    par.add_argument("--distributed-executor-backend", choices=["mp", "uni"], default=S,
                     help="mp: worker processes (default); uni: one process (tensor parallel size 1)")


_CONVERT = {
    "api_key": _csv,
    "served_model_name": _csv,
    "middleware": _csv,
    "cors_origins": _csv,
    "disable_plugins": _csv,
    "allowed_lora_dirs": _csv,
    "lora_modules": _lora_modules,
    "speculative_config": _speculative_config,
    "allowed_origins": _json_or_csv,
    "allowed_methods": _json_or_csv,
    "allowed_headers": _json_or_csv,
    "metrics_prefix": _csv,
    "default_chat_template_kwargs": _json_dict,
    "kv_cache_memory_bytes": parse_size,
    "max_request_body_bytes": parse_size,
    "max_tools_bytes": parse_size,
    "response_store_max_bytes": parse_size,
    "dtype": vllm_compat.canonical_dtype,  # vLLM's half / float too
    "max_model_len": vllm_compat.model_len,  # vLLM's 32k, auto
    "max_num_batched_tokens": vllm_compat.human_int,
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(value, str):
        if name in _CONVERT:
            return _CONVERT[name](value)
        if isinstance(default, bool):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int) or name in ("max_model_len", "max_num_batched_tokens", "num_kv_blocks",
                                                "max_cpu_loras", "max_log_len") \
                or (name in _STRUCTURED_LIMITS and name != "structured_compile_timeout"):
            return int(value)
        if isinstance(default, float) or name in ("request_timeout", "structured_compile_timeout"):
            return float(value)
    return value


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerSettings:
    """Merge flags, environment variables and the ``--config`` YAML file.

    vLLM's flags and YAML keys that are not heron's go through :func:`heron.server.vllm_compat.apply_vllm_options`
    (a warning for each that has no effect here, an exit for features heron lacks); their aliases of heron
    settings rank with the YAML file. ``VLLM_API_KEY`` is read as vLLM reads it, when no other key is given:
    ``--api-key`` > ``HERON_API_KEY`` > ``VLLM_API_KEY`` > ``api-key`` in the YAML file.
    """
    environ = os.environ if environ is None else environ
    names = [f.name for f in fields(ServerSettings)]
    values: dict[str, Any] = {}
    vllm: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get("HERON_CONFIG")
    if config_path:
        import yaml

        with open(config_path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"heron serve: {config_path} must hold a mapping of setting names to values")
        values, vllm = vllm_compat.split_config(loaded, names)
    vllm.update(vllm_compat.given_options(args, names))
    values.update(vllm_compat.apply_vllm_options(vllm))
    if environ.get("VLLM_API_KEY") and "HERON_API_KEY" not in environ:
        values["api_key"] = [environ["VLLM_API_KEY"]]  # one key, as vLLM reads it
    defaults = ServerSettings()
    for name in names:
        env = environ.get(f"HERON_{name.upper()}")
        if env is not None:
            values[name] = env
        if hasattr(args, name):
            values[name] = getattr(args, name)
    if isinstance(values.get("attention_backend"), str):
        values["attention_backend"] = vllm_compat.attention_backend(values["attention_backend"])
    try:
        coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
        return ServerSettings(**coerced)
    except argparse.ArgumentTypeError as err:  # e.g. a malformed HERON_LORA_MODULES or YAML lora-modules
        raise SystemExit(f"heron serve: {err}") from None
