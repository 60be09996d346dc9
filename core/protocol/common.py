"""Wire models shared by every endpoint: errors, usage, logprobs, model cards, stream options."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = (
    "ChatLogprob",
    "ChatLogprobs",
    "ChatTokenLogprob",
    "CompletionLogprobs",
    "CompletionTokensDetails",
    "ErrorBody",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "OpenAIModel",
    "PromptLogprob",
    "PromptTokensDetails",
    "ResponseFormat",
    "StreamOptions",
    "StructuredOutputsRequest",
    "UsageInfo",
)


class OpenAIModel(BaseModel):
    """Base for request models: unknown fields are kept (and logged by the server), not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class ErrorBody(BaseModel):
    """OpenAI's error object; ``param`` and ``code`` are always sent, ``null`` when they do not apply."""

    # the server always writes all four keys: say so in the response schema
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""

    error: ErrorBody


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class StreamOptions(OpenAIModel):
    """``include_usage``: a last chunk with the usage; ``continuous_usage_stats`` (vLLM): usage so
    far on every chunk too. Only with ``stream: true``."""

    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class JsonSchemaFormat(OpenAIModel):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    """OpenAI's ``response_format``, and vLLM's ``structural_tag`` (xgrammar structural tags).

    A structural tag is either ``{"type": "structural_tag", "format": {...}}`` (xgrammar's
    format object) or the older ``{"type": "structural_tag", "structures": [{"begin", "schema",
    "end"}], "triggers": [...]}``.
    """

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: JsonSchemaFormat | None = None
    format: dict[str, Any] | None = None
    structures: list[dict[str, Any]] | None = None
    triggers: list[str] | None = None


class StructuredOutputsRequest(OpenAIModel):
    """vLLM's ``structured_outputs`` extra: exactly one constraint."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    #: an xgrammar structural tag as JSON text (or object), as vLLM's ``structured_outputs.structural_tag``
    structural_tag: str | dict[str, Any] | None = None
    disable_any_whitespace: bool = False


class PromptLogprob(BaseModel):
    """One candidate at one prompt position (vLLM's ``prompt_logprobs`` entries)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class ChatTokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogprob(ChatTokenLogprob):
    top_logprobs: list[ChatTokenLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """A choice's logprobs: ``content`` per generated token; ``refusal`` always null (OpenAI's
    schema requires the key)."""

    content: list[ChatLogprob] | None = None
    refusal: list[ChatLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """The legacy completions logprobs object."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "heron"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    #: "generate" (text) or "pooling" (embeddings, classification, scores)
    runner: str | None = None
    #: what the model serves: ["generate"], or some of "embed", "classify", "encode", "score"
    capabilities: list[str] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)
