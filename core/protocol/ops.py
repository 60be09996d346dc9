"""Bodies of vLLM's operational routes: ``/invocations``, ``/is_sleeping``, ``/tokenizer_info``,
``/server_info`` and the ``/openapi.json`` document (see :mod:`heron.server.routes.ops`).

The routes build their answers as plain dicts; these models say what the bodies hold, so the
OpenAPI document (:mod:`heron.server.openapi`) describes them like every other route.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from heron.protocol.chat import ChatCompletionChunk, ChatCompletionResponse
from heron.protocol.common import OpenAIModel
from heron.protocol.completions import CompletionResponse, CompletionStreamResponse
from heron.protocol.pooling import (
    ClassificationResponse,
    EmbeddingResponse,
    PoolingResponse,
    RerankResponse,
    ScoreResponse,
)

__all__ = (
    "InvocationChunk",
    "InvocationRequest",
    "InvocationResponse",
    "IsSleepingResponse",
    "OpenAPIDocument",
    "ServerInfoResponse",
    "TokenizerInfoResponse",
)


class InvocationRequest(OpenAIModel):
    """SageMaker's ``/invocations``: the body of another route, which its fields choose.

    ``messages`` goes to chat completions and ``prompt`` to completions on a generating model; on
    a pooling model ``input`` (or ``messages``) goes to embeddings (or classification, for a
    classifier), ``text_1``/``text_2`` to score and ``query``/``documents`` to rerank. Every
    other field is that route's own.
    """

    messages: list[dict[str, Any]] | None = Field(default=None, description="Chat messages: a chat completion.")
    prompt: Any = Field(default=None, description="A prompt (text, token ids, or a list of them): a completion.")
    input: Any = Field(default=None, description="Texts or token ids to embed (or classify).")
    text_1: Any = Field(default=None, description="With text_2: score pairs.")
    text_2: Any = Field(default=None, description="With text_1: score pairs.")
    query: str | None = Field(default=None, description="With documents: rerank.")
    documents: list[str] | None = Field(default=None, description="With query: rerank.")

    def unknown_fields(self) -> list[str]:
        return []  # the chosen route reads the body again and names what it ignores


class InvocationResponse(RootModel[ChatCompletionResponse | CompletionResponse | EmbeddingResponse
                                   | ClassificationResponse | ScoreResponse | RerankResponse | PoolingResponse]):
    """The chosen route's answer."""


class InvocationChunk(RootModel[ChatCompletionChunk | CompletionStreamResponse]):
    """With ``"stream": true``: the chosen route's chunk."""


class IsSleepingResponse(BaseModel):
    """Whether the engine is asleep (or falling asleep): generation answers 503 until ``/wake_up``."""

    is_sleeping: bool


class TokenizerInfoResponse(BaseModel):
    """The tokenizer's configuration (its ``tokenizer_config.json`` settings, file paths left out),
    its class and the chat template the server renders with."""

    model_config = ConfigDict(extra="allow")

    tokenizer_class: str


class ServerInfoResponse(BaseModel):
    """What the server runs with (``?config_format=json`` gives objects, ``text`` (default) strings)."""

    version: str = Field(description="The heron version.")
    server_settings: dict[str, Any] | str = Field(description="The server's settings (API keys redacted).")
    engine_config: dict[str, Any] | str | None = Field(description="The engine's settings (null while loading).")
    engine: dict[str, Any] = Field(description="What the engine resolved: dtype, KV blocks, backends, sleep state.")
    env: dict[str, str] = Field(description="HERON_* and VLLM_* environment variables (none naming a KEY).")


class OpenAPIDocument(BaseModel):
    """This server's OpenAPI 3.1 document (the same as ``/docs/openapi.json``)."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
