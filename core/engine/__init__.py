"""The inference engine: request state, paged KV blocks, scheduler, model runner, sampler."""

from heron.engine.async_engine import AsyncEngine
from heron.engine.config import EngineConfig
from heron.engine.engine import LLMEngine
from heron.engine.errors import EngineDeadError, RequestRejectedError
from heron.engine.llm import LLM
from heron.engine.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from heron.engine.sampling_params import SamplingParams, StructuredOutputsParams

__all__ = (
    "LLM",
    "AsyncEngine",
    "CompletionOutput",
    "EngineConfig",
    "EngineDeadError",
    "LLMEngine",
    "Logprob",
    "RequestMetrics",
    "RequestOutput",
    "RequestRejectedError",
    "SamplingParams",
    "StructuredOutputsParams",
)
