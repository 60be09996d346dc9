"""The OpenAPI 3.1 document at ``/docs/openapi.json``, described by the ``heron.protocol`` models.

Routes read and validate their bodies themselves (so every bad body becomes an OpenAI-shaped 4xx),
which leaves Litestar nothing to describe: it knows the paths, not what they take or answer.
:data:`ROUTES` says, per operation, which pydantic model is the request body, which the answer
(and, for streaming routes, the Server-Sent Event chunk), and which errors it can return;
:func:`build_document` adds that to the document Litestar builds, with every model under
``components/schemas``. A route missing from :data:`ROUTES` is left as Litestar describes it (a
test fails on it, so a new route gets an entry).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import heron
from heron.protocol.chat import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from heron.protocol.common import ErrorResponse, ModelList
from heron.protocol.completions import (
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from heron.protocol.lora import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from heron.protocol.ops import (
    InvocationChunk,
    InvocationRequest,
    InvocationResponse,
    IsSleepingResponse,
    OpenAPIDocument,
    ServerInfoResponse,
    TokenizerInfoResponse,
)
from heron.protocol.pooling import (
    ClassificationRequest,
    ClassificationResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    PoolingRequest,
    PoolingResponse,
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from heron.protocol.responses import (
    DeletedResponse,
    ResponseItemList,
    ResponseObject,
    ResponsesRequest,
    ResponseStreamEvent,
)
from heron.protocol.server_info import HealthStatus, ServerLoad, VersionInfo
from heron.server.auth import OPEN_PATHS
from heron.server.settings import ServerSettings

__all__ = ("OPTIONAL_ROUTES", "ROUTES", "RouteDoc", "build_document", "openapi_config")

_REF = "#/components/schemas/{model}"

#: what each error status means on heron's routes (every one has the ErrorResponse shape)
_ERROR_MEANINGS = {
    400: "The request is invalid: a field's type or value, a limit, or a token id outside the vocabulary.",
    401: "The API key is missing or wrong.",
    404: "The requested model (or LoRA adapter) is not served here.",
    408: "The request ran longer than --request-timeout.",
    413: "The request body is larger than --max-request-body-bytes.",
    415: "The body is not sent as application/json.",
    500: "An internal error (a bug in heron or a plugin); the server keeps serving.",
    503: "Not ready (loading, draining, engine failed) or the queue is full; see Retry-After.",
}

_JSON_BODY_ERRORS = (400, 404, 413, 415, 503)


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """What one operation takes and answers.

    Attributes:
        request: the JSON request body's model (POST routes).
        response: the 200 answer's model (``application/json``).
        stream: with ``"stream": true``, the model of each Server-Sent Event's ``data``.
        errors: error statuses the route returns, each as :class:`ErrorResponse`.
        other: statuses answered with another model (``/health``'s 503).
        text: a plain-text 200 answer's media type instead of ``response`` (``/metrics``).
        operation_id: the name client generators give the call (OpenAI's where it has one).
    """

    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    stream: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    other: dict[int, type[BaseModel]] = field(default_factory=dict)
    text: str | None = None
    operation_id: str | None = None


#: (METHOD, path) -> what the operation takes and answers
ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("POST", "/v1/chat/completions"): RouteDoc(ChatCompletionRequest, ChatCompletionResponse, ChatCompletionChunk,
                                               (*_JSON_BODY_ERRORS, 408), operation_id="createChatCompletion"),
    ("POST", "/v1/completions"): RouteDoc(CompletionRequest, CompletionResponse, CompletionStreamResponse,
                                          (*_JSON_BODY_ERRORS, 408), operation_id="createCompletion"),
    ("POST", "/v1/responses"): RouteDoc(ResponsesRequest, ResponseObject, ResponseStreamEvent,
                                        (*_JSON_BODY_ERRORS, 408), operation_id="createResponse"),
    ("GET", "/v1/responses/{response_id}"): RouteDoc(response=ResponseObject, stream=ResponseStreamEvent,
                                                     errors=(400, 404), operation_id="getResponse"),
    ("DELETE", "/v1/responses/{response_id}"): RouteDoc(response=DeletedResponse, errors=(404,),
                                                        operation_id="deleteResponse"),
    ("GET", "/v1/responses/{response_id}/input_items"): RouteDoc(response=ResponseItemList, errors=(400, 404),
                                                                 operation_id="listInputItems"),
    ("POST", "/v1/responses/{response_id}/cancel"): RouteDoc(response=ResponseObject, errors=(400, 404),
                                                             operation_id="cancelResponse"),
    ("POST", "/v1/embeddings"): RouteDoc(EmbeddingRequest, EmbeddingResponse, errors=(*_JSON_BODY_ERRORS, 408),
                                         operation_id="createEmbedding"),
    ("POST", "/pooling"): RouteDoc(PoolingRequest, PoolingResponse, errors=(*_JSON_BODY_ERRORS, 408),
                                   operation_id="pooling"),
    ("POST", "/classify"): RouteDoc(ClassificationRequest, ClassificationResponse, errors=(*_JSON_BODY_ERRORS, 408),
                                    operation_id="classify"),
    **{("POST", path): RouteDoc(ScoreRequest, ScoreResponse, errors=(*_JSON_BODY_ERRORS, 408), operation_id=op)
       for path, op in (("/score", "score"), ("/v1/score", "scoreV1"))},
    **{("POST", path): RouteDoc(RerankRequest, RerankResponse, errors=(*_JSON_BODY_ERRORS, 408), operation_id=op)
       for path, op in (("/rerank", "rerank"), ("/v1/rerank", "rerankV1"), ("/v2/rerank", "rerankV2"))},
    ("POST", "/tokenize"): RouteDoc(TokenizeRequest, TokenizeResponse, errors=_JSON_BODY_ERRORS,
                                    operation_id="tokenize"),
    ("POST", "/detokenize"): RouteDoc(DetokenizeRequest, DetokenizeResponse, errors=_JSON_BODY_ERRORS,
                                      operation_id="detokenize"),
    ("GET", "/v1/models"): RouteDoc(response=ModelList, errors=(503,), operation_id="listModels"),
    ("GET", "/health"): RouteDoc(response=HealthStatus, other={503: HealthStatus}, operation_id="health"),
    ("GET", "/ping"): RouteDoc(response=HealthStatus, operation_id="ping"),
    ("GET", "/version"): RouteDoc(response=VersionInfo, operation_id="version"),
    ("GET", "/load"): RouteDoc(response=ServerLoad, operation_id="load"),
    ("GET", "/metrics"): RouteDoc(text="text/plain", operation_id="metrics"),
    # only with --allow-runtime-lora-updating (or VLLM_ALLOW_RUNTIME_LORA_UPDATING): see OPTIONAL_ROUTES
    ("POST", "/v1/load_lora_adapter"): RouteDoc(LoadLoRAAdapterRequest, text="text/plain", errors=_JSON_BODY_ERRORS,
                                                operation_id="loadLoraAdapter"),
    ("POST", "/v1/unload_lora_adapter"): RouteDoc(UnloadLoRAAdapterRequest, text="text/plain",
                                                  errors=_JSON_BODY_ERRORS, operation_id="unloadLoraAdapter"),
    # vLLM's operational routes (heron.server.routes.ops); the gated ones are in OPTIONAL_ROUTES
    ("POST", "/invocations"): RouteDoc(InvocationRequest, InvocationResponse, InvocationChunk,
                                       (*_JSON_BODY_ERRORS, 408), operation_id="invocations"),
    ("POST", "/ping"): RouteDoc(response=HealthStatus, operation_id="pingPost"),
    ("GET", "/openapi.json"): RouteDoc(response=OpenAPIDocument, operation_id="openapiDocument"),
    ("GET", "/tokenizer_info"): RouteDoc(response=TokenizerInfoResponse, errors=(503,), operation_id="tokenizerInfo"),
    ("POST", "/reset_prefix_cache"): RouteDoc(errors=(400, 503), operation_id="resetPrefixCache"),
    ("POST", "/sleep"): RouteDoc(errors=(400, 503), operation_id="sleep"),
    ("POST", "/wake_up"): RouteDoc(errors=(400, 503), operation_id="wakeUp"),
    ("GET", "/is_sleeping"): RouteDoc(response=IsSleepingResponse, errors=(503,), operation_id="isSleeping"),
    ("GET", "/server_info"): RouteDoc(response=ServerInfoResponse, errors=(400,), operation_id="serverInfo"),
    ("POST", "/start_profile"): RouteDoc(errors=(400, 503), operation_id="startProfile"),
    ("POST", "/stop_profile"): RouteDoc(errors=(400, 503), operation_id="stopProfile"),
}

#: operations served only when a setting turns them on (the rest are always served)
OPTIONAL_ROUTES = frozenset({
    ("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter"),  # --allow-runtime-lora-updating
    ("GET", "/tokenizer_info"),  # --enable-tokenizer-info-endpoint
    ("POST", "/reset_prefix_cache"), ("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
    ("GET", "/server_info"),  # --server-dev-mode / VLLM_SERVER_DEV_MODE
    ("POST", "/start_profile"), ("POST", "/stop_profile"),  # --torch-profiler-dir / VLLM_TORCH_PROFILER_DIR
})

_STREAM_NOTE = ("With `\"stream\": true`: Server-Sent Events. Each `data:` field holds one chunk as JSON (or an "
                "error object if generation fails midway) and the stream ends with `data: [DONE]`.")
_EVENTS_NOTE = ("With `\"stream\": true`: Server-Sent Events, each `event: <type>` with its JSON in `data:`, "
                "numbered by `sequence_number`, ending with `response.completed`, `response.incomplete` or "
                "`response.failed` (no `[DONE]`).")


def _components(routes: dict[tuple[str, str], RouteDoc]) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """JSON schemas of every model the routes name: request bodies in validation mode, answers in
    serialization mode. Returns ({(model, mode): $ref}, components/schemas)."""
    wanted: dict[tuple[type[BaseModel], str], None] = {(ErrorResponse, "serialization"): None}
    for doc in routes.values():
        if doc.request is not None:
            wanted[(doc.request, "validation")] = None
        for model in (doc.response, doc.stream, *doc.other.values()):
            if model is not None:
                wanted[(model, "serialization")] = None
    refs, defs = models_json_schema(list(wanted), ref_template=_REF)  # type: ignore[arg-type]
    return refs, defs.get("$defs", {})


def _event_schema(chunk_ref: dict[str, Any], error_ref: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event: ``data`` is ``[DONE]`` or a JSON chunk (or error) as text."""
    payload = {"type": "string", "contentMediaType": "application/json",
               "contentSchema": {"anyOf": [chunk_ref, error_ref]}}
    return {"type": "object", "required": ["data"],
            "properties": {"data": {"anyOf": [{"const": "[DONE]"}, payload]}}}


def _responses(doc: RouteDoc, refs: dict[Any, dict[str, Any]], protected: bool) -> dict[str, Any]:
    error_ref = refs[(ErrorResponse, "serialization")]
    ok: dict[str, Any] = {"description": "OK", "content": {}}
    if doc.text is not None:
        ok["content"][doc.text] = {"schema": {"type": "string"}}
    if doc.response is not None:
        ok["content"]["application/json"] = {"schema": refs[(doc.response, "serialization")]}
    if doc.stream is not None:
        note = _STREAM_NOTE if doc.stream is not ResponseStreamEvent else _EVENTS_NOTE
        ok["description"] = f"The whole answer as JSON. {note}"
        ok["content"]["text/event-stream"] = {"schema": _event_schema(refs[(doc.stream, "serialization")], error_ref)}
    out: dict[str, Any] = {"200": ok}
    for status in sorted({*doc.errors, 500, *((401,) if protected else ())}):
        out[str(status)] = {"description": _ERROR_MEANINGS.get(status, "Error."),
                            "content": {"application/json": {"schema": error_ref}}}
    for status, model in doc.other.items():
        out[str(status)] = {"description": _summary(model) or _ERROR_MEANINGS.get(status, "Error."),
                            "content": {"application/json": {"schema": refs[(model, "serialization")]}}}
    return out


def _summary(model: type[BaseModel]) -> str | None:
    return model.__doc__.strip().splitlines()[0] if model.__doc__ else None


def _request_body(model: type[BaseModel], refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    return {"required": True, "description": _summary(model),
            "content": {"application/json": {"schema": refs[(model, "validation")]}}}


def build_document(base: dict[str, Any], settings: ServerSettings,
                   routes: dict[tuple[str, str], RouteDoc] = ROUTES) -> dict[str, Any]:
    """Litestar's document ``base`` (as a dict) completed from ``routes``; ``base`` is not changed.

    With API keys configured, the protected operations say so (bearer or ``x-api-key``) and list 401.
    """
    doc = copy.deepcopy(base)
    if settings.root_path.rstrip("/"):  # behind a proxy: "try it out" calls go through its prefix
        doc["servers"] = [{"url": settings.root_path.rstrip("/")}]
    refs, schemas = _components(routes)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(schemas)
    keyed = bool(settings.api_key)
    if keyed:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
            "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
        doc["security"] = [{"bearer": []}, {"x-api-key": []}]
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            route = routes.get((method.upper(), path))
            if route is None or not isinstance(operation, dict):
                continue
            if route.request is not None:
                operation["requestBody"] = {k: v for k, v in _request_body(route.request, refs).items() if v}
            operation["responses"] = _responses(route, refs, protected=keyed and path not in OPEN_PATHS)
            if route.operation_id:
                operation["operationId"] = route.operation_id
            if keyed and path in OPEN_PATHS:
                operation["security"] = []
    return doc


class _Completing:
    """Mixin for Litestar render plugins: render the completed document instead of Litestar's."""

    settings: ServerSettings
    _cache: tuple[dict[str, Any], dict[str, Any]] | None

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        # Litestar hands over the same dict object on every call: complete it once
        if self._cache is None or self._cache[0] is not openapi_schema:
            self._cache = (openapi_schema, build_document(openapi_schema, self.settings))
        return super().render(request, self._cache[1])  # type: ignore[misc]


class _Json(_Completing, JsonRenderPlugin):
    def __init__(self, settings: ServerSettings) -> None:
        super().__init__()
        self.settings, self._cache = settings, None


class _Swagger(_Completing, SwaggerRenderPlugin):
    def __init__(self, settings: ServerSettings) -> None:
        super().__init__()
        self.settings, self._cache = settings, None


def openapi_config(settings: ServerSettings) -> OpenAPIConfig:
    """Swagger UI at ``/docs`` and the completed document at ``/docs/openapi.json``."""
    return OpenAPIConfig(
        title="heron", version=heron.__version__, path="/docs",
        description="OpenAI-compatible LLM inference server. Every error is "
                    "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
        render_plugins=[_Swagger(settings), _Json(settings)],
    )
