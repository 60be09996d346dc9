"""The table of ``vllm serve`` flags that heron accepts under vLLM's names without being heron flags.

Collected from vLLM's ``EngineArgs.add_cli_args``, ``AsyncEngineArgs``, the OpenAI server's
``FrontendArgs`` and ``make_arg_parser`` (current and recently removed flags, so older deployment
recipes start too). Each flag has one kind: ``noop`` flags are accepted with one warning saying
why they change nothing here; ``later`` flags name features heron does not have yet (parallelism,
vLLM's older speculative-decoding flags, other devices) and are an error unless given the value heron already
behaves as; ``alias`` flags are vLLM spellings of a heron setting. Flags that heron implements
under vLLM's own name are heron's flags (heron.server.settings) and are not listed here; a flag
listed here that the serve parser already has is skipped, so a feature that lands as a real flag
takes over its name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("REASONS", "VLLM_ATTENTION_BACKENDS", "VLLM_FLAGS", "VllmFlag")


@dataclass(frozen=True, slots=True)
class VllmFlag:
    """One vLLM flag heron accepts without it being a heron flag."""

    name: str  #: the long flag without its dashes, e.g. ``gpu-memory-utilization``
    short: tuple[str, ...]  #: vLLM's short forms, e.g. ``("-tp",)``
    kind: str  #: ``noop``, ``later`` or ``alias``
    value: str  #: b on/off, i int, f float, s string, j JSON, l list, o optional string
    why: str  #: noop: why it has no effect; later: what is missing; alias: the heron setting
    allowed: tuple[str, ...] = ()  #: later: values that match heron (lower-case text)

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return f"--{self.name}"


#: why a ``noop`` flag changes nothing here, one sentence each
REASONS = {
    "gpu": "heron does not reserve GPU memory; size the KV cache with --kv-cache-memory-bytes or --num-kv-blocks",
    "graphs": "heron runs eager PyTorch, with no CUDA graphs or torch.compile to configure",
    "offload": "the weights already live in CPU memory",
    "swap": "heron preempts by recomputing, so it keeps no swap space",
    "kv-dtype": "heron keeps the KV cache in the model's dtype",
    "block": "heron's paged KV cache uses 16-token blocks",
    "stats": "heron logs no periodic statistics; /metrics serves them",
    "requests": "heron logs requests only with --log-requests",
    "tokenizer": "heron always runs the checkpoint's own (fast) tokenizer in the server process",
    "hub": "heron loads local checkpoints and the local Hugging Face cache as they are and downloads nothing",
    "one-process": "heron runs its engine and tensor-parallel workers as its own processes over torch.distributed; this tuning does not apply",
    "multimodal": "heron serves text-only models",
    "scheduler": "heron's scheduler always chunks prefills, recomputes on preemption and streams every step",
    "tracing": "heron has no tracing or extra engine statistics; /metrics serves its metrics",
    "cache": "heron's prefix cache and KV pool have no such option",
    "kv-transfer": "heron does not move KV caches between instances",
    "plugins": "heron finds parsers and processors as installed entry-point plugins (pip install the plugin)",
    "model": "heron builds the model from the checkpoint's config as it is",
    "kernels": "heron picks kernels with --attention-backend and --linear-kernel",
    "generation": "heron always applies the checkpoint's generation_config.json defaults",
    "structured": "heron's structured outputs always use xgrammar",
    "lora": "heron applies LoRA adapters in the model's dtype in one process",
    "logging": "heron logs through Python's logging to stderr",
    "frontend": "heron's HTTP server has no such option",
    "grpc": "heron serves only the HTTP OpenAI API",
    "tools": "heron runs no built-in tool servers",
    "reasoning": "--reasoning-parser alone turns reasoning parsing on",
    "embeds": "heron takes prompts as text or token ids, not embeddings",
    "env": "heron does not validate vLLM's environment variables",
    "render-tools": "heron renders tools when tool_choice is none unless --exclude-tools-when-tool-choice-none",
    "profiler": "heron's profiler writes torch traces to --torch-profiler-dir",
}

# reason: flag[/short][:value] ...   (value: b when omitted)
_NOOP = """
gpu: gpu-memory-utilization:f enable-flash-late-interaction
graphs: enforce-eager max-seq-len-to-capture:i max-context-len-to-capture:i cudagraph-capture-sizes:l
graphs: max-cudagraph-capture-size:i compilation-config/-cc:j optimization-level/-O:s performance-mode:s
graphs: cudagraph-metrics enable-layerwise-nvtx-tracing
offload: cpu-offload-gb:f cpu-offload-params:l offload-backend:s offload-group-size:i offload-num-in-group:i
offload: offload-prefetch-step:i offload-params:l moe-cpu-budget-gb:f moe-cpu-min-free-gb:f
swap: swap-space:f preemption-mode:s
kv-dtype: kv-cache-dtype:s
block: block-size:i
stats: disable-log-stats aggregate-engine-logging
requests: disable-log-requests enable-log-outputs enable-log-deltas
tokenizer: tokenizer:s tokenizer-mode:s skip-tokenizer-init tokenizer-pool-size:i tokenizer-pool-type:s
tokenizer: tokenizer-pool-extra-config:j intial-incremental-detokenization-offset:i
hub: revision:s code-revision:s tokenizer-revision:s download-dir:s hf-token:o hf-config-path:s load-format:s
hub: config-format:s ignore-patterns:l safetensors-load-strategy:s model-loader-extra-config:j
hub: pt-load-map-location:s use-tqdm-on-load quantization-param-path:s qlora-adapter-name-or-path:s
one-process: worker-cls:s worker-extension-cls:s ray-workers-use-nsight
one-process: max-parallel-loading-workers:i disable-custom-all-reduce all2all-backend:s
one-process: enable-expert-parallel/-ep enable-eplb eplb-config:j expert-placement-strategy:s enable-dbo
one-process: ubatch-size:i dbo-decode-token-threshold:i dbo-prefill-token-threshold:i enable-elastic-ep
one-process: disable-nccl-for-dp-synchronization dcp-comm-backend:s dcp-kv-cache-interleave-size:i
one-process: cp-kv-cache-interleave-size:i data-parallel-backend/-dpb:s distributed-timeout-seconds:i
one-process: worker-use-ray engine-use-ray data-parallel-supervisor-port:i
one-process: dp-supervisor-probe-interval-s:f dp-supervisor-probe-timeout-s:f
one-process: dp-supervisor-probe-failure-threshold:i moe-backend:s
multimodal: limit-mm-per-prompt:j mm-processor-kwargs:j mm-processor-cache-gb:f mm-processor-cache-type:s
multimodal: mm-shm-cache-max-object-size-mb:i mm-encoder-only mm-encoder-tp-mode:s mm-encoder-attn-backend:s
multimodal: media-io-kwargs:j enable-mm-embeds interleave-mm-strings skip-mm-profiling video-pruning-rate:f
multimodal: language-model-only allowed-local-media-path:s allowed-media-domains:l
multimodal: disable-mm-preprocessor-cache default-mm-loras:j enable-tower-connector-lora
multimodal: enable-mm-processor-stats
scheduler: enable-chunked-prefill max-num-partial-prefills:i max-long-partial-prefills:i
scheduler: long-prefill-token-threshold:i disable-chunked-mm-input scheduler-cls:s async-scheduling
scheduler: disable-hybrid-kv-cache-manager stream-interval:i num-scheduler-steps:i multi-step-stream-outputs
scheduler: scheduler-delay-factor:f num-lookahead-slots:i use-v2-block-manager disable-async-output-proc
tracing: otlp-traces-endpoint:s collect-detailed-traces:s show-hidden-metrics-for-version:s kv-cache-metrics
tracing: kv-cache-metrics-sample:f enable-mfu-metrics enable-logging-iteration-details
tracing: enable-server-load-tracking enable-per-request-metrics
cache: prefix-caching-hash-algo:s calculate-kv-scales kv-sharing-fast-prefill mamba-cache-dtype:s
cache: mamba-ssm-cache-dtype:s mamba-block-size:i mamba-cache-mode:s kv-offloading-size:f
cache: kv-offloading-backend:s
kv-transfer: kv-transfer-config:j kv-events-config:j ec-transfer-config:j weight-transfer-config:j
plugins: tool-parser-plugin:s reasoning-parser-plugin:s logits-processors:l io-processor-plugin:s
plugins: logits-processor-pattern:s
model: hf-overrides:j rope-scaling:j rope-theta:f override-attention-dtype:s disable-sliding-window
model: disable-cascade-attn enable-return-routed-experts allow-deprecated-quantization override-neuron-config:j
model: additional-config:j logprobs-mode:s
kernels: attention-config/-ac:j kernel-config:j enable-flashinfer-autotune
generation: generation-config:s override-generation-config:j
structured: guided-decoding-backend:s structured-outputs-config:j guided-decoding-disable-fallback
structured: guided-decoding-disable-any-whitespace guided-decoding-disable-additional-properties
lora: lora-dtype:s fully-sharded-loras enable-lora-bias lora-extra-vocab-size:i long-lora-scaling-factors:l
lora: specialize-active-lora enable-prompt-adapter max-prompt-adapters:i max-prompt-adapter-token:i prompt-adapters:l
logging: log-config-file:s log-error-stack
frontend: enable-prompt-tokens-details cohere-is-reasoning-model cohere-format:s tokens-only fingerprint-mode:s
frontend: fingerprint-value:s enable-ssl-refresh ssl-ciphers:s h11-max-incomplete-event-size:i
frontend: h11-max-header-count:i enable-offline-docs disable-access-log-for-endpoints:s
frontend: chat-template-text-format:s
render-tools: expand-tools-even-if-tool-choice-none
grpc: grpc
tools: tool-server:s
reasoning: enable-reasoning
embeds: enable-prompt-embeds
env: fail-on-environ-validation
profiler: profiler-config:j
"""

_PARALLEL = "heron has tensor and data parallelism; pipeline and context parallelism are not available yet"
_SPECULATIVE = ("this older speculative decoding flag is not available yet: give heron's --speculative-config "
                "'{\"method\": \"ngram\", \"num_speculative_tokens\": 4}' (or '{\"model\": DRAFT, ...}') instead")
# flag[/short][:value]=allowed,values  (no "=": any value is an error)
_LATER = {
    _PARALLEL: """
        pipeline-parallel-size/-pp:i=1
        decode-context-parallel-size/-dcp:i=1 prefill-context-parallel-size/-pcp:i=1
        data-parallel-rank/-dpn:i=0 data-parallel-start-rank/-dpr:i=0 data-parallel-size-local/-dpl:i
        data-parallel-address/-dpa:s data-parallel-rpc-port/-dpp:i data-parallel-hybrid-lb/-dph=false
        data-parallel-external-lb/-dpe=false api-server-count/-asc:i=1
    """,
    _SPECULATIVE: """
        speculative-model:s num-speculative-tokens:i
        speculative-draft-tensor-parallel-size:i speculative-max-model-len:i speculative-disable-by-batch-size:i
        ngram-prompt-lookup-max:i ngram-prompt-lookup-min:i speculative-model-quantization:s
        spec-decoding-acceptance-method:s typical-acceptance-sampler-posterior-threshold:f
        typical-acceptance-sampler-posterior-alpha:f speculative-disable-mqa-scorer disable-logprobs-during-spec-decoding
    """,
}

#: vLLM spellings of heron settings: flag -> (value kind, heron setting)
_ALIASES = {
    "num-gpu-blocks-override": ("i", "num_kv_blocks"),
    "disable-fastapi-docs": ("b", "disable_docs"),
    "enable-log-requests": ("b", "log_requests"),
    "shutdown-timeout": ("f", "drain_timeout"),
    "override-pooler-config": ("j", "pooler_config"),
    "task": ("s", "runner"),
    "disable-frontend-multiprocessing": ("b", "engine_in_process"),  # vLLM's older --task: generate, embed, classify, score, reward
}

#: vLLM's attention backend names (``--attention-backend``); one heron lacks falls back to auto
VLLM_ATTENTION_BACKENDS = frozenset("""
FLASH_ATTN FLASH_ATTN_VLLM_V1 FLASH_ATTN_MLA TRITON_ATTN TRITON_ATTN_VLLM_V1 XFORMERS ROCM_FLASH ROCM_ATTN
ROCM_AITER_MLA ROCM_AITER_FA ROCM_AITER_UNIFIED_ATTN TORCH_SDPA FLASHINFER FLASHINFER_VLLM_V1 FLASHINFER_MLA
TRITON_MLA CUTLASS_MLA FLASHMLA FLASHMLA_SPARSE PALLAS PALLAS_VLLM_V1 IPEX NO_ATTENTION FLEX_ATTENTION
TREE_ATTN CPU_ATTN DUAL_CHUNK_FLASH_ATTN DIFFERENTIAL_FLASH_ATTN TORCH_SDPA_VLLM_V1 CUSTOM
""".split())


def _item(text: str, kind: str, why: str) -> VllmFlag:
    spec, _, allowed = text.partition("=")
    spec, _, value = spec.partition(":")
    name, *short = spec.split("/")
    return VllmFlag(name, tuple(short), kind, value or "b", why,
                    tuple(a for a in allowed.split(",") if a))


def _build() -> dict[str, VllmFlag]:
    table: dict[str, VllmFlag] = {}
    for line in _NOOP.strip().splitlines():
        reason, _, items = line.partition(":")
        for text in items.split():
            flag = _item(text, "noop", REASONS[reason])
            table[flag.name] = flag
    for feature, items in _LATER.items():
        for text in items.split():
            flag = _item(text, "later", feature)
            table[flag.name] = flag
    for name, (value, setting) in _ALIASES.items():
        table[name] = VllmFlag(name, (), "alias", value, setting)
    return table


#: every listed flag by its long name without dashes
VLLM_FLAGS: dict[str, VllmFlag] = _build()
