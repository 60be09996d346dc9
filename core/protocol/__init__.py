"""Pydantic models of the OpenAI wire format and vLLM-compatible extras (the HTTP boundary)."""

from heron.protocol.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
)
from heron.protocol.common import ErrorBody, ErrorResponse, ModelCard, ModelList, UsageInfo
from heron.protocol.completions import (
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    TokenizeRequest,
)
from heron.protocol.pooling import (
    ClassificationRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    PoolingRequest,
    RerankRequest,
    ScoreRequest,
)
from heron.protocol.tool_calls import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    ToolParseResult,
    make_alnum_id,
    make_tool_call_id,
)

__all__ = (
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ClassificationRequest",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "PoolingRequest",
    "RerankRequest",
    "ScoreRequest",
    "CompletionRequest",
    "CompletionResponse",
    "DetokenizeRequest",
    "ErrorBody",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "TokenizeRequest",
    "UsageInfo",
    "DeltaFunctionCall",
    "DeltaMessage",
    "DeltaToolCall",
    "FunctionCall",
    "ToolCall",
    "ToolParseResult",
    "make_alnum_id",
    "make_tool_call_id",
)
