"""The plugin contracts: small ABCs with docstrings. Plugins depend on these, never the reverse."""

from heron.interfaces.attention import (
    AttentionBackend,
    AttentionLayerInfo,
    ForwardBatch,
    current_batch,
    running_batch,
)
from heron.interfaces.linear import LinearKernel
from heron.interfaces.lora_resolver import LoRAResolver
from heron.interfaces.middleware import MiddlewareFactory
from heron.interfaces.model import CausalLM, ModelContext
from heron.interfaces.pooling import POOLING_TASKS, PoolingModel
from heron.interfaces.reasoning_parser import ReasoningParser
from heron.interfaces.response_store import ResponseStore, StoredResponse
from heron.interfaces.tool_parser import ToolParser

__all__ = (
    "AttentionBackend",
    "AttentionLayerInfo",
    "CausalLM",
    "ForwardBatch",
    "LinearKernel",
    "LoRAResolver",
    "MiddlewareFactory",
    "ModelContext",
    "POOLING_TASKS",
    "PoolingModel",
    "ReasoningParser",
    "ResponseStore",
    "StoredResponse",
    "ToolParser",
    "current_batch",
    "running_batch",
)
