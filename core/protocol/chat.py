"""``/v1/chat/completions`` request, response and stream-chunk models."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from heron.protocol.common import ChatLogprobs, OpenAIModel, PromptLogprob, UsageInfo
from heron.protocol.sampling_fields import SamplingFields
from heron.protocol.tool_calls import DeltaToolCall, ToolCall

__all__ = (
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ChatTool",
    "ChatChoice",
    "ChatStreamChoice",
    "ChatDelta",
)


class ChatMessage(OpenAIModel):
    """One input message; ``content`` may be a string or a list of content parts."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChatFunction(OpenAIModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(OpenAIModel):
    type: Literal["function"] = "function"
    function: ChatFunction


class ChatCompletionRequest(SamplingFields):
    """A chat completion: OpenAI's fields and vLLM's extras (unknown fields are accepted and logged)."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    # vLLM extras
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    echo: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    include_reasoning: bool = True
    #: passed to the chat template (gpt-oss style templates read it), as vLLM does
    reasoning_effort: str | None = None
    #: RAG documents handed to templates that support them (vLLM's ``documents``)
    documents: list[dict[str, Any]] | None = None
    # informational: accepted and not used (OpenAI stores nothing here)
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None


class ResponseMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None
    #: vLLM's extra: per prompt token (None for the first) ``{token_id: {logprob, rank, decoded_token}}``
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None


class ChatDelta(BaseModel):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatStreamChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None
