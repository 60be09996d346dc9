"""Pooling endpoints' wire models: ``/v1/embeddings`` (OpenAI's shape), and vLLM's ``/pooling``,
``/classify``, ``/score`` and ``/rerank`` (Jina/Cohere-style) requests and answers.

Every input list may hold strings or token ids; ``truncate_prompt_tokens`` keeps at most that many
tokens (-1: the model's longest input), and inputs longer than the model's longest input are
truncated to it (as sentence-transformers does).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from heron.protocol.common import OpenAIModel, UsageInfo

__all__ = (
    "ClassificationData",
    "ClassificationRequest",
    "ClassificationResponse",
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "PoolingData",
    "PoolingInput",
    "PoolingRequest",
    "PoolingResponse",
    "RerankDocument",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "RerankUsage",
    "ScoreData",
    "ScoreRequest",
    "ScoreResponse",
)

#: one text, several texts, one prompt's token ids, or several prompts' token ids
PoolingInput = str | list[str] | list[int] | list[list[int]]


class _PoolingFields(OpenAIModel):
    """Fields every pooling request has."""

    model: str | None = None
    user: str | None = None
    truncate_prompt_tokens: int | None = Field(
        default=None, description="Keep at most this many tokens of each input (-1: the model's longest input).")
    priority: int = 0
    request_id: str | None = None


class EmbeddingRequest(_PoolingFields):
    """Embed ``input`` (OpenAI), or chat ``messages`` rendered with the chat template (vLLM)."""

    input: PoolingInput | None = None
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="vLLM extra: a conversation to embed instead of `input`.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, description="Matryoshka models only: keep this many dimensions.")
    normalize: bool | None = Field(default=None, description="L2-normalise (default: the model's setting).")
    add_special_tokens: bool | None = Field(
        default=None, description="Default: true for `input`, false for `messages` (the template adds them).")
    add_generation_prompt: bool = False
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class PoolingRequest(EmbeddingRequest):
    """vLLM's ``/pooling``: the model's raw pooled output (``task``: embed, classify or encode)."""

    task: Literal["embed", "classify", "encode"] | None = None


class EmbeddingData(BaseModel):
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 bytes.")


class EmbeddingResponse(BaseModel):
    """OpenAI's embeddings answer."""

    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[EmbeddingData]
    usage: UsageInfo


class PoolingData(BaseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: list[list[float]] | list[float] | str


class PoolingResponse(BaseModel):
    """vLLM's ``/pooling`` answer: each input's pooled tensor as (nested) lists."""

    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[PoolingData]
    usage: UsageInfo


class ClassificationRequest(_PoolingFields):
    """Classify each input with the model's classification head."""

    input: PoolingInput
    add_special_tokens: bool = True


class ClassificationData(BaseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationResponse(BaseModel):
    """vLLM's ``/classify`` answer: per input, the most likely label and every class's probability."""

    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ClassificationData]
    usage: UsageInfo


class ScoreRequest(_PoolingFields):
    """Score ``text_1`` against ``text_2``: 1:1, 1:N (one ``text_1``) or N:N (pairs in order)."""

    text_1: str | list[str]
    text_2: str | list[str]


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    """vLLM's ``/score`` answer: one score per pair, in pair order."""

    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ScoreData]
    usage: UsageInfo


class RerankRequest(_PoolingFields):
    """Order ``documents`` by relevance to ``query`` (Jina/Cohere's rerank API, as vLLM serves it)."""

    query: str
    documents: list[str]
    top_n: int | None = Field(default=None, description="Return the best N (default, or 0: all).")
    return_documents: bool = True


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    document: RerankDocument | None = None
    relevance_score: float


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    """Documents sorted by ``relevance_score``, best first; ``index`` is the position in the request."""

    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]
