"""``/v1/responses`` request model (OpenAI's fields and vLLM's sampling extras) and small reply models.

Input items and tools stay plain dicts here: :mod:`heron.server.responses.convert` checks each
one and answers a 400 naming the item, which reads better than a pydantic union error. The
response object itself is assembled as a dict by :mod:`heron.server.responses.output` in the exact
shape of OpenAI's published schema; :class:`ResponseObject` documents it for the OpenAPI page.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from heron.protocol.common import OpenAIModel, StructuredOutputsRequest

__all__ = (
    "DeletedResponse",
    "ReasoningConfig",
    "ResponseItemList",
    "ResponseObject",
    "ResponseStreamEvent",
    "ResponsesRequest",
    "TextConfig",
)


class TextConfig(OpenAIModel):
    """``text``: the output format (``text``, ``json_object``, ``json_schema``) and verbosity."""

    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ReasoningConfig(OpenAIModel):
    """``reasoning``: ``effort`` goes to the chat template as ``reasoning_effort``."""

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(OpenAIModel):
    """A ``POST /v1/responses`` body. Unknown fields are accepted and logged, as everywhere."""

    input: str | list[dict[str, Any]]
    model: str | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    top_logprobs: int | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # refused with a 400 when set: prompt templates and conversations live on OpenAI's side
    prompt: Any = None
    conversation: Any = None
    # vLLM extras, as on /v1/chat/completions
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    logit_bias: dict[str, float] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    priority: int = 0
    cache_salt: str | None = None
    #: a client's label for logs; the response id is always the server's own
    request_id: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    structured_outputs: StructuredOutputsRequest | None = None


class ResponseObject(BaseModel):
    """OpenAI's response object (the fields heron sends; ``output`` items are plain dicts)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: str | None = None
    model: str
    output: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: str = "disabled"
    store: bool = True
    background: bool = False
    user: str | None = None


class ResponseStreamEvent(BaseModel):
    """One streamed event (``event: <type>``): ``response.created``, ``response.output_text.delta``, ...

    Its other fields depend on ``type`` as OpenAI's API reference lists them.
    """

    model_config = ConfigDict(extra="allow")

    type: str
    sequence_number: int


class ResponseItemList(BaseModel):
    """``GET /v1/responses/{id}/input_items``."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class DeletedResponse(BaseModel):
    """``DELETE /v1/responses/{id}``."""

    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True
