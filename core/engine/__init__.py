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
from heron.engine.pooling_outputs import (
    ClassificationOutput,
    ClassificationRequestOutput,
    EmbeddingOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
    ScoringOutput,
    ScoringRequestOutput,
)
from heron.engine.pooling_params import PoolingParams
from heron.engine.sampling_params import SamplingParams, StructuredOutputsParams

__all__ = (
    "LLM",
    "AsyncEngine",
    "ClassificationOutput",
    "ClassificationRequestOutput",
    "CompletionOutput",
    "EmbeddingOutput",
    "EmbeddingRequestOutput",
    "EngineBusyError",
    "EngineConfig",
    "EngineDeadError",
    "LLMEngine",
    "Logprob",
    "PoolingOutput",
    "PoolingParams",
    "PoolingRequestOutput",
    "RequestMetrics",
    "RequestOutput",
    "RequestFailedError",
    "RequestRejectedError",
    "SamplingParams",
    "ScoringOutput",
    "ScoringRequestOutput",
    "StructuredOutputsParams",
    "TokenIdError",
    "merge_output",
)
