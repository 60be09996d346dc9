"""``/v1/completions``, ``/tokenize`` and ``/detokenize`` models."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from heron.protocol.common import CompletionLogprobs, OpenAIModel, PromptLogprob, UsageInfo
from heron.protocol.sampling_fields import SamplingFields

__all__ = (
    "CompletionChoice",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionStreamResponse",
    "DetokenizeRequest",
    "DetokenizeResponse",
    "TokenizeRequest",
    "TokenizeResponse",
)


class CompletionRequest(SamplingFields):
    """A text completion of one prompt or a batch (strings or token ids); OpenAI's fields and vLLM's extras."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None
    #: tokenize text prompts with the tokenizer's special tokens (BOS), as vLLM does by default
    add_special_tokens: bool = True


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None
    #: vLLM's extras (``return_token_ids``): the choice's generated token ids and its prompt's
    #: (streamed: each chunk's new ids, the prompt's on the choice's first chunk)
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionStreamResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class TokenizeRequest(OpenAIModel):
    """Tokenize exactly one of ``prompt`` (text) or ``messages`` (rendered with the chat template)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIModel):
    """Decode token ids back into text."""

    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str
