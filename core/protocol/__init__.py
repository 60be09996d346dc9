"""Pydantic models of the OpenAI wire format and vLLM-compatible extras (the HTTP boundary)."""

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
    "DeltaFunctionCall",
    "DeltaMessage",
    "DeltaToolCall",
    "FunctionCall",
    "ToolCall",
    "ToolParseResult",
    "make_alnum_id",
    "make_tool_call_id",
)
