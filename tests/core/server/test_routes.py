"""Chat and completions responses and SSE streams have OpenAI's exact shape."""

from __future__ import annotations

import json

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def _events(resp) -> list:
    out = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chat_whole(make_client):
    client = make_client("Hello there, friend.")
    body = client.post(CHAT, json={"messages": MSG}).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello there, friend."
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    prompt_ids, _ = client.engine.seen[-1]
    text = client.engine.tokenizer.decode(prompt_ids)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_chat_stream_shape(make_client):
    client = make_client("Hello there, friend.")
    resp = client.post(CHAT, json={"messages": MSG, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp)
    assert events[-1] == "[DONE]"
    first, usage_chunk = events[0], events[-2]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    chunks = events[1:-2]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == first["id"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello there, friend."
    # as vLLM: the choice's last text and its finish_reason come in one chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"] == {"content": "."}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_chat_n2_distinct_indexes(make_client):
    client = make_client("One two.")
    body = client.post(CHAT, json={"messages": MSG, "n": 2}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    events = _events(client.post(CHAT, json={"messages": MSG, "n": 2, "stream": True}))
    finishes = [c["choices"][0]["index"] for c in events[:-1] if c["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [0, 1]
    roles = [c["choices"][0]["index"] for c in events[:-1] if c["choices"][0]["delta"].get("role")]
    assert roles == [0, 1]


def test_stop_string_and_length(make_client):
    client = make_client("Hello there, friend.")
    body = client.post(CHAT, json={"messages": MSG, "stop": [","]}).json()
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["stop_reason"] == ","
    body = client.post(CHAT, json={"messages": MSG, "max_completion_tokens": 2}).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2


def test_chat_logprobs_shape(make_client):
    client = make_client("Hi.")
    body = client.post(CHAT, json={"messages": MSG, "logprobs": True, "top_logprobs": 2}).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    for entry in content:
        assert set(entry) >= {"token", "logprob", "bytes", "top_logprobs"} and len(entry["top_logprobs"]) == 2


def test_completions_prompt_forms_and_echo(make_client):
    client = make_client(" world")
    body = client.post("/v1/completions", json={"prompt": "Hello", "echo": True, "max_tokens": 5}).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Hello world"
    ids = client.engine.tokenizer.encode("Hello", add_special_tokens=False)
    body = client.post("/v1/completions", json={"prompt": [ids, ids], "max_tokens": 5}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    body = client.post("/v1/completions", json={"prompt": ["a", "b"], "n": 2, "logprobs": 1}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    lp = body["choices"][0]["logprobs"]
    assert set(lp) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"} and len(lp["tokens"]) > 0
    events = _events(client.post("/v1/completions", json={"prompt": "Hello", "stream": True}))
    assert events[-1] == "[DONE]" and "".join(e["choices"][0]["text"] for e in events[:-1]) == " world"


def test_small_routes(make_client):
    client = make_client(served_model_name=["smol", "alias"])
    cards = client.get("/v1/models").json()["data"]
    assert [c["id"] for c in cards] == ["smol", "alias"] and cards[0]["max_model_len"] == 2048
    assert client.post(CHAT, json={"model": "alias", "messages": MSG}).json()["model"] == "smol"
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/version").json()["version"]
    assert client.get("/load").status_code == 200
    tok = client.post("/tokenize", json={"prompt": "Hello world"}).json()
    assert tok["count"] == len(tok["tokens"]) > 0
    assert client.post("/detokenize", json={"tokens": tok["tokens"]}).json()["prompt"] == "Hello world"
    assert client.get("/docs/openapi.json").json()["info"]["title"] == "heron"
    metrics = client.get("/metrics").text
    for name in ("heron:num_requests_running", "heron:kv_cache_usage_perc", "heron:prompt_tokens_total",
                 "heron:request_success_total", "heron:time_to_first_token_seconds"):
        assert name in metrics


def test_middleware_plugins_in_order(make_client):
    client = make_client(middleware=["request_id", "cors"], cors_origins=["http://ui.example"])
    resp = client.get("/v1/models", headers={"X-Request-Id": "abc123", "Origin": "http://ui.example"})
    assert resp.headers["x-request-id"] == "abc123"
    assert resp.headers["access-control-allow-origin"] == "http://ui.example"
    pre = client.options(CHAT, headers={"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
