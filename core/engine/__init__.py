"""The inference engine: request state, paged KV blocks, scheduler, model runner, sampler."""

from heron.engine.async_engine import AsyncEngine
from heron.engine.config import EngineConfig
from heron.engine.engine import LLMEngine
from heron.engine.errors import (
    EngineBusyError,
    EngineDeadError,
    RequestFailedError,
    RequestRejectedError,
    TokenIdError,
)
from heron.engine.llm import LLM
from heron.engine.outputs import (
    CompletionOutput,
    Logprob,
    RequestMetrics,
    RequestOutput,
    merge_output,
)
from heron.engine.sampling_params import SamplingParams, StructuredOutputsParams

__all__ = (
    "LLM",
    "AsyncEngine",
    "CompletionOutput",
    "EngineBusyError",
    "EngineConfig",
    "EngineDeadError",
    "LLMEngine",
    "Logprob",
    "RequestMetrics",
    "RequestOutput",
    "RequestFailedError",
    "RequestRejectedError",
    "SamplingParams",
    "StructuredOutputsParams",
    "TokenIdError",
    "merge_output",
)
