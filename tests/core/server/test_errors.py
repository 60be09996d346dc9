"""Every bad request gets the right OpenAI error object and the server keeps serving."""

from __future__ import annotations

import pytest

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def _err(resp, status, param=None, code=None):
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    if param is not None:
        assert body["param"] == param, body
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"messages": MSG, "max_tokens": -1}, "max_tokens"),
        ({"messages": MSG, "temperature": -1}, "temperature"),
        ({"messages": MSG, "n": 0}, "n"),
        ({"messages": MSG, "top_p": 0}, "top_p"),
        ({"messages": "hi"}, "messages"),
        ({"messages": MSG, "temperature": "hot"}, "temperature"),
        ({"messages": MSG, "logit_bias": {"x": 1}}, "logit_bias"),
        ({"messages": MSG, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": MSG, "response_format": {"type": "json_schema"}}, "response_format"),
        ({"messages": MSG, "structured_outputs": {"regex": "a+", "choice": ["a"]}}, "structured_outputs"),
        ({"messages": MSG, "guided_choice": ["a", "b"], "guided_regex": "a"}, "guided_choice"),
        ({"messages": MSG, "tool_choice": "auto"}, "tool_choice"),
        ({"messages": MSG, "tools": []}, "tools"),
        ({"messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
        ({"messages": MSG, "chat_template": "{{ 1 }}"}, "chat_template"),
        ({"messages": []}, "messages"),
    ],
)
def test_bad_fields_are_400_naming_the_param(make_client, payload, param):
    client = make_client()
    _err(client.post(CHAT, json=payload), 400, param=param)
    assert client.post(CHAT, json={"messages": MSG}).status_code == 200


def test_malformed_json_invalid_utf8_and_content_type(make_client):
    client = make_client()
    _err(client.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"}), 400)
    body = _err(client.post(CHAT, content=b'{"messages": "\xff\xfe"}', headers={"content-type": "application/json"}), 400)
    assert "UTF-8" in body["message"]
    _err(client.post(CHAT, content=b"messages=hi", headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    _err(client.post(CHAT, content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    assert client.post(CHAT, json={"messages": MSG}).status_code == 200


def test_oversized_body_is_413(make_client):
    client = make_client(max_request_body_bytes=1000)
    _err(client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 5000}]}), 413)
    assert client.post(CHAT, json={"messages": MSG}).status_code == 200


def test_unknown_model_route_and_method(make_client):
    client = make_client()
    _err(client.post(CHAT, json={"model": "gpt-17", "messages": MSG}), 404, param="model", code="model_not_found")
    _err(client.get("/v1/nope"), 404)
    _err(client.get(CHAT), 405)


def test_prompt_longer_than_context(make_client):
    client = make_client(max_model_len=64)
    body = _err(client.post(CHAT, json={"messages": [{"role": "user", "content": "word " * 200}]}), 400,
                code="context_length_exceeded")
    assert "64" in body["message"]


def test_max_tokens_beyond_context_is_lowered(make_client):
    client = make_client(max_model_len=128)
    resp = client.post(CHAT, json={"messages": MSG, "max_tokens": 100000})
    assert resp.status_code == 200
    prompt_len, params = client.engine.seen[-1]
    assert params.max_tokens == 128 - len(prompt_len)


def test_full_queue_is_503_with_retry_after(make_client):
    """The queue counts sequences admitted beyond --max-num-seqs, including those still being
    prepared (the engine's own queue would not see a burst in time)."""
    client = make_client(max_waiting_requests=2, max_num_seqs=1)
    state = client.app.state.heron
    state.active_seqs = 3  # one running + two waiting
    resp = client.post(CHAT, json={"messages": MSG})
    _err(resp, 503, code="queue_full")
    assert resp.headers["retry-after"] == "1"
    state.active_seqs = 2  # one waiting: room for a request of n=2
    assert client.post(CHAT, json={"messages": MSG, "n": 2}).status_code == 200
    assert state.active_seqs == 2  # its room was given back when it finished
    state.active_seqs = 0


def test_admission_counts_sequences_and_releases_once(make_client):
    client = make_client(max_waiting_requests=2, max_num_seqs=2)
    state = client.app.state.heron
    first = state.admit(3)  # n=3 on an idle server: two run, one waits
    second = state.admit(1)  # one more waiting: the queue (2) is now full
    from heron.server.errors import APIError

    with pytest.raises(APIError) as info:
        state.admit(1)
    assert info.value.status == 503 and info.value.code == "queue_full"
    second.release()
    second.release()  # idempotent
    assert state.active_seqs == 3
    state.admit(1).release()
    first.release()
    assert state.active_seqs == 0


def test_unknown_fields_are_accepted(make_client):
    client = make_client()
    assert client.post(CHAT, json={"messages": MSG, "frobnicate": True, "x_extra": {"a": 1}}).status_code == 200


def test_api_key_auth(make_client):
    client = make_client(api_key=["k1", "k2"])
    for path in ("/health", "/ping", "/version"):
        assert client.get(path).status_code == 200
    _err(client.get("/v1/models"), 401, code="invalid_api_key")
    _err(client.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
    _err(client.get("/metrics"), 401)
    assert client.get("/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
    ok = client.post(CHAT, json={"messages": MSG}, headers={"Authorization": "Bearer k1"})
    assert ok.status_code == 200


def test_engine_rejection_is_a_400_not_a_500(make_client):
    from heron.engine.errors import RequestRejectedError

    def refuse(_prompt):
        raise RequestRejectedError("Prompt token ids must be in [0, 49152).")

    client = make_client(refuse)
    _err(client.post(CHAT, json={"messages": MSG}), 400)
    resp = client.post(CHAT, json={"messages": MSG, "stream": True})
    assert '"code":400' in resp.text.replace(" ", "") or '"type":"invalid_request_error"' in resp.text.replace(" ", "")
    resp = client.post("/v1/completions", json={"prompt": "hi"})
    assert resp.status_code == 400
    assert client.get("/health").status_code == 200
