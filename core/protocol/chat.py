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
    #: passed to the chat template (gpt-oss style templates read it), as vLLM does; also
    #: ``enable_thinking`` (false for "none") unless ``chat_template_kwargs`` set it
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    #: RAG documents handed to templates that support them (vLLM's ``documents``)
    documents: list[dict[str, Any]] | None = None
    #: tokenize the rendered prompt with the tokenizer's special tokens (BOS) added on top of
    #: what the template wrote; off by default, as in vLLM (templates write their own)
    add_special_tokens: bool = False
    # informational: accepted and not used (OpenAI stores nothing here)
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    #: echoed in the answer (heron has one tier)
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None


class ResponseMessage(BaseModel):
    """The generated message: ``tool_calls`` is ``[]`` when no tool was called (as vLLM sends)."""

    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    #: vLLM's extra (``return_token_ids``): the choice's generated token ids
    token_ids: list[int] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    service_tier: str | None = None
    #: vLLM's extra: per prompt token (None for the first) ``{token_id: {logprob, rank, decoded_token}}``
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None
    #: vLLM's extra (``return_token_ids``): the prompt's token ids
    prompt_token_ids: list[int] | None = None


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
    #: vLLM's extra (``return_token_ids``): the token ids this chunk adds
    token_ids: list[int] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None
    service_tier: str | None = None
    #: vLLM's extra (``return_token_ids``): the prompt's token ids, on the first chunk only
    prompt_token_ids: list[int] | None = None
