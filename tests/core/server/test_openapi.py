"""``/docs/openapi.json`` is a valid OpenAPI 3.1 document that describes every route's body,
answers and errors from the ``heron.protocol`` models, and the server's real answers match it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from litestar.testing import TestClient
from openapi_spec_validator import validate as validate_spec

from heron.server import ServerSettings, build_app
from heron.server.openapi import OPTIONAL_ROUTES, ROUTES, build_document

KEY = "sk-openapi"
#: settings under which every route is served (the runtime LoRA routes and vLLM's gated operational routes
#: are off by default)
EVERY_ROUTE = {"allow_runtime_lora_updating": True, "enable_tokenizer_info_endpoint": True, "server_dev_mode": True,
               "torch_profiler_dir": "heron-openapi-test-profiles"}
#: POST routes that take no body
BODYLESS = {"/v1/responses/{response_id}/cancel", "/ping", "/reset_prefix_cache", "/sleep", "/wake_up",
            "/start_profile", "/stop_profile"}
AUTH = {"Authorization": f"Bearer {KEY}"}
ERROR_REF = "#/components/schemas/ErrorResponse"


def _fetch(settings: ServerSettings, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with TestClient(build_app(settings)) as client:
        response = client.get("/docs/openapi.json", headers=headers or {})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return _fetch(ServerSettings(**EVERY_ROUTE))


@pytest.fixture(scope="module")
def keyed_doc() -> dict[str, Any]:
    return _fetch(ServerSettings(api_key=[KEY], **EVERY_ROUTE), AUTH)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for a schema of the document, its ``#/components/...`` refs resolving."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def _json_schema(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    return doc["paths"][path][method.lower()]["responses"][str(status)]["content"]["application/json"]["schema"]


# -- the document ---------------------------------------------------------------------------------


def test_document_is_valid_openapi_31(doc, keyed_doc):
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)
    validate_spec(keyed_doc)


def test_schemathesis_loads_every_operation(doc):
    import schemathesis

    schema = schemathesis.openapi.from_dict(doc)
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in loaded} == set(ROUTES)
    chat = next(op for op in loaded if op.path == "/v1/chat/completions")
    assert [body.media_type for body in chat.body] == ["application/json"]


def _served(settings: ServerSettings) -> set[tuple[str, str]]:
    app = build_app(settings)
    return {(method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))  # "{id:str}" is "{id}" in the document
            for route in app.routes for method in getattr(route, "methods", ())
            if method not in ("HEAD", "OPTIONS") and not route.path.startswith("/docs")
            # pages for people (the chat page at /) are left out of the document on purpose
            and any(h.include_in_schema and method in h.http_methods for h in route.route_handlers)}


def test_every_route_is_documented(doc, monkeypatch):
    served = _served(ServerSettings(**EVERY_ROUTE))
    assert served == set(ROUTES), "a route without a RouteDoc in heron.server.openapi.ROUTES (or a stale one)"
    assert {(m, p) for m, p, _ in _operations(doc)} == set(ROUTES)
    for var in ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "HERON_ALLOW_RUNTIME_LORA_UPDATING", "VLLM_SERVER_DEV_MODE",
                "VLLM_TORCH_PROFILER_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert _served(ServerSettings()) == set(ROUTES) - OPTIONAL_ROUTES
    assert not {p for _, p, _ in _operations(_fetch(ServerSettings()))} & {p for _, p in OPTIONAL_ROUTES}


def test_operation_ids_are_unique_and_openai_named(doc):
    ids = {(m, p): op["operationId"] for m, p, op in _operations(doc)}
    assert len(set(ids.values())) == len(ids)
    assert ids[("POST", "/v1/chat/completions")] == "createChatCompletion"
    assert ids[("POST", "/v1/completions")] == "createCompletion"
    assert ids[("GET", "/v1/models")] == "listModels"


def test_every_ref_resolves(doc):
    refs = set(_refs(doc))
    assert refs, "the document has no $ref at all"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], f"{ref} does not resolve"
    # the component schemas are themselves valid JSON Schema (2020-12, as OpenAPI 3.1 uses)
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema({**schema, "title": name})


def test_post_routes_have_request_bodies(doc):
    posts = [(path, op) for method, path, op in _operations(doc)
             if method == "POST" and path not in BODYLESS]
    assert {p for p, _ in posts} == {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/tokenize",
                                     "/detokenize", "/v1/embeddings", "/pooling", "/classify", "/score", "/v1/score",
                                     "/rerank", "/v1/rerank", "/v2/rerank", "/v1/load_lora_adapter",
                                     "/v1/unload_lora_adapter", "/invocations"}
    for path, op in posts:
        body = op["requestBody"]
        assert body["required"] is True, path
        schema = body["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        component = doc["components"]["schemas"][name]
        assert component["type"] == "object" and component["properties"], path


def test_every_operation_documents_the_error_shape(doc):
    for method, path, op in _operations(doc):
        responses = op["responses"]
        assert "200" in responses, (method, path)
        errors = [s for s, r in responses.items() if s != "200"
                  and r["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}]
        assert errors, f"{method} {path} documents no ErrorResponse"
        if method == "POST" and "requestBody" in op:
            assert {"400", "413", "415", "503"} <= set(errors), (path, errors)
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert "408" in doc["paths"][path]["post"]["responses"]
    # /health answers 503 with its own body, not an error object
    health_503 = doc["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert health_503 == {"$ref": "#/components/schemas/HealthStatus"}


def test_error_shape_has_openai_fields(doc):
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    body = schemas["ErrorBody"]
    assert set(body["required"]) == {"message", "type", "param", "code"}
    validator = _validator(doc, {"$ref": ERROR_REF})
    validator.validate({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}})
    assert not validator.is_valid({"error": {"message": "m"}})
    assert not validator.is_valid({"detail": "m"})


def test_openai_fields_are_described(doc):
    schemas = doc["components"]["schemas"]
    chat, completion = schemas["ChatCompletionRequest"], schemas["CompletionRequest"]
    assert "messages" in chat["required"] and "prompt" in completion["required"]
    for request in (chat, completion):
        for name in ("model", "max_tokens", "temperature", "top_p", "n", "stop", "stream", "logit_bias", "seed"):
            assert name in request["properties"], name
        assert request["additionalProperties"] is True  # unknown fields are accepted (and logged)
    message = schemas["ChatMessage"]
    assert "role" in message["required"] and "content" in message["properties"]
    assert set(schemas["ChatCompletionResponse"]["required"]) >= {"id", "model", "choices", "usage"}
    # aliases are the wire names
    assert "schema" in schemas["JsonSchemaFormat"]["properties"]
    assert "json" in schemas["StructuredOutputsRequest"]["properties"]


def test_streaming_routes_describe_server_sent_events(doc):
    for path, chunk in (("/v1/chat/completions", "ChatCompletionChunk"), ("/v1/completions", "CompletionStreamResponse")):
        ok = doc["paths"][path]["post"]["responses"]["200"]
        assert "[DONE]" in ok["description"]
        event = ok["content"]["text/event-stream"]["schema"]
        validator = _validator(doc, event)
        validator.validate({"data": "[DONE]"})
        assert not validator.is_valid({"event": "x"})
        payload = next(b for b in event["properties"]["data"]["anyOf"] if "contentSchema" in b)
        assert payload["contentMediaType"] == "application/json"
        assert {"$ref": f"#/components/schemas/{chunk}"} in payload["contentSchema"]["anyOf"]


def test_api_keys_are_documented(doc, keyed_doc):
    assert "security" not in doc and "securitySchemes" not in doc["components"]
    assert all("401" not in op["responses"] for _, _, op in _operations(doc))
    assert keyed_doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
    assert {"bearer": []} in keyed_doc["security"]
    for _, path, op in _operations(keyed_doc):
        if path in ("/health", "/ping", "/version"):
            assert op["security"] == [] and "401" not in op["responses"], path
        else:
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, path


def test_build_document_leaves_litestar_document_unchanged():
    app = build_app(ServerSettings())
    base = app.openapi_schema.to_schema()
    snapshot = json.dumps(base, sort_keys=True, default=str)
    done = build_document(base, ServerSettings())
    assert json.dumps(base, sort_keys=True, default=str) == snapshot
    assert "requestBody" in done["paths"]["/tokenize"]["post"]
    assert "requestBody" not in base["paths"]["/tokenize"]["post"]


def test_swagger_page_embeds_the_completed_document():
    with TestClient(build_app(ServerSettings())) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "#/components/schemas/ChatCompletionRequest" in page.text


# -- real answers match the document ------------------------------------------------------------


def test_answers_match_the_document(make_client, doc):
    client = make_client("Hello there, friend.")
    msg = [{"role": "user", "content": "hi"}]
    cases = [
        ("POST", "/v1/chat/completions", {"messages": msg, "logprobs": True, "top_logprobs": 2}, 200),
        ("POST", "/v1/completions", {"prompt": "Say hi", "max_tokens": 4, "logprobs": 1}, 200),
        ("POST", "/tokenize", {"prompt": "hello world", "return_token_strs": True}, 200),
        ("POST", "/detokenize", {"tokens": [1, 2, 3]}, 200),
        ("GET", "/v1/models", None, 200),
        ("GET", "/health", None, 200),
        ("GET", "/ping", None, 200),
        ("GET", "/version", None, 200),
        ("GET", "/load", None, 200),
        ("POST", "/v1/chat/completions", {"messages": "not a list"}, 400),
        ("POST", "/v1/completions", {"prompt": "x", "model": "no-such-model"}, 404),
        ("POST", "/detokenize", {"tokens": [-1]}, 400),
    ]
    for method, path, body, status in cases:
        response = client.request(method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        _validator(doc, _json_schema(doc, method, path, status)).validate(response.json())
    bad_type = client.post("/tokenize", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert bad_type.status_code == 415
    _validator(doc, _json_schema(doc, "POST", "/tokenize", 415)).validate(bad_type.json())
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_stream_events_match_the_document(make_client, doc):
    client = make_client("Hello there, friend.")
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "Say hi", "max_tokens": 4})):
        response = client.post(path, json={**body, "stream": True, "stream_options": {"include_usage": True}})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        ok = doc["paths"][path]["post"]["responses"]["200"]["content"]
        event = _validator(doc, ok["text/event-stream"]["schema"])
        payload = next(b for b in ok["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
                       if "contentSchema" in b)
        chunk = _validator(doc, payload["contentSchema"])
        datas = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]" and len(datas) > 2
        for data in datas:
            event.validate({"data": data})
            if data != "[DONE]":
                chunk.validate(json.loads(data))
