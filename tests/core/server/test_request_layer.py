"""The shared request layer on the scripted engine: limits, nesting, timeouts, ids, failures."""

from __future__ import annotations

import json

import pytest

from heron.engine.errors import EngineDeadError, RequestFailedError, TokenIdError

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


def _err(resp, status, param=None, code=None, type=None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    assert body["param"] == param, body
    if code is not None:
        assert body["code"] == code, body
    if type is not None:
        assert body["type"] == type, body
    return body


def _events(resp) -> list:
    return [json.loads(line[6:]) if line[6:].startswith("{") else line[6:]
            for line in resp.text.splitlines() if line.startswith("data: ")]


LIMITS = [
    # (settings, route, extra body, param, the flag the message names)
    ({"max_prompts_per_request": 3}, COMP, {"prompt": ["a"] * 4}, "prompt", "--max-prompts-per-request"),
    ({"max_n": 4}, CHAT, {"n": 5}, "n", "--max-n"),
    ({"max_sequences_per_request": 6}, COMP, {"prompt": ["a", "b", "c"], "n": 3}, "n",
     "--max-sequences-per-request"),
    ({"max_stop": 2}, CHAT, {"stop": ["a", "b", "c"]}, "stop", "--max-stop"),
    ({"max_stop": 2}, COMP, {"stop_token_ids": [1, 2, 3]}, "stop_token_ids", "--max-stop"),
    ({"max_stop_length": 5}, CHAT, {"stop": ["abcdef"]}, "stop", "--max-stop-length"),
    ({"max_bad_words": 1}, COMP, {"bad_words": ["x", "y"]}, "bad_words", "--max-bad-words"),
    ({"max_logit_bias": 2}, CHAT, {"logit_bias": {"1": 1, "2": 1, "3": 1}}, "logit_bias", "--max-logit-bias"),
    ({"max_tools": 1}, CHAT, {"tools": [{"type": "function", "function": {"name": n}} for n in "ab"]}, "tools",
     "--max-tools"),
    ({"max_tools_bytes": 100}, CHAT, {"tools": [{"type": "function", "function": {
        "name": "f", "description": "d" * 200}}]}, "tools", "--max-tools-bytes"),
]


@pytest.mark.parametrize(("settings", "route", "extra", "param", "flag"), LIMITS,
                         ids=[f"{p[3]}-{p[4]}" for p in LIMITS])
def test_each_limit_is_a_400_naming_it(make_client, settings, route, extra, param, flag):
    client = make_client(**settings)
    body = {"messages": MSG} if route == CHAT else {"prompt": "hi"}
    err = _err(client.post(route, json={**body, **extra}), 400, param=param, code="limit_exceeded")
    assert flag in err["message"]
    assert client.app.state.heron.active_seqs == 0  # refused before admission
    assert client.post(route, json=body).status_code == 200


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_json_is_a_400(make_client, depth):
    client = make_client()
    raw = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    _err(client.post(CHAT, content=raw, headers={"content-type": "application/json"}), 400, code="json_too_deep")
    assert client.post(CHAT, json={"messages": MSG}).status_code == 200


def test_token_ids_outside_the_vocabulary(make_client):
    client = make_client()
    vocab = client.app.state.heron.vocab_size
    for field, value in (("allowed_token_ids", [vocab]), ("allowed_token_ids", [-1]),
                         ("stop_token_ids", [vocab + 7]), ("logit_bias", {str(vocab): 1.0}),
                         ("logit_bias", {"-4": 1.0})):
        err = _err(client.post(CHAT, json={"messages": MSG, field: value}), 400, param=field,
                   code="invalid_token_id")
        assert str(next(iter(value))) in err["message"]
    assert client.post(CHAT, json={"messages": MSG, "allowed_token_ids": [vocab - 1]}).status_code == 200


@pytest.mark.parametrize(("body", "param"), [
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"truncate_prompt_tokens": -2}, "truncate_prompt_tokens"),
    ({"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
])
def test_fields_that_cannot_be_honoured_are_refused(make_client, body, param):
    client = make_client()
    _err(client.post(CHAT, json={"messages": MSG, **body}), 400, param=param)


def test_informational_fields_are_accepted(make_client):
    client = make_client()
    body = {"messages": MSG, "user": "u1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto",
            "modalities": ["text"]}
    assert client.post(CHAT, json=body).status_code == 200


def test_request_ids_are_echoed_never_engine_keys(make_client):
    client = make_client()
    keys = []
    engine = client.engine
    original = engine.generate

    def spy(prompt_ids, params, request_id, **kw):
        keys.append(request_id)
        return original(prompt_ids, params, request_id, **kw)

    engine.generate = spy
    a = client.post(CHAT, json={"messages": MSG, "request_id": "mine"}).json()
    b = client.post(CHAT, json={"messages": MSG}, headers={"X-Request-Id": "mine"}).json()
    c = client.post(COMP, json={"prompt": ["a", "b"], "request_id": "mine"}).json()
    assert a["id"] == b["id"] == "chatcmpl-mine" and c["id"] == "cmpl-mine"
    assert len(keys) == 4 and len(set(keys)) == 4 and "mine" not in keys


def test_streaming_obeys_the_request_timeout(make_client):
    client = make_client(script="one two three four five six seven eight nine ten", request_timeout=0.3)
    client.engine.delay = 0.1
    resp = client.post(CHAT, json={"messages": MSG, "stream": True})
    assert resp.status_code == 200
    events = _events(resp)
    assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "timeout_error", events[-3:]
    assert client.engine.aborted, "the engine request was not aborted"
    assert client.app.state.heron.active_seqs == 0 and client.app.state.heron.in_flight == 0
    whole = client.post(COMP, json={"prompt": "hi"})
    _err(whole, 408, type="timeout_error")


def _failing(client, error: BaseException, after: int = 2):
    engine = client.engine
    original = engine.generate

    async def generate(prompt_ids, params, request_id, **kw):
        count = 0
        async for out in original(prompt_ids, params, request_id, **kw):
            count += 1
            if count > after:
                raise error
            yield out

    engine.generate = generate


@pytest.mark.parametrize(("error", "status", "param"), [
    (RequestFailedError("the sampler failed on this row"), 500, None),
    (TokenIdError("stop_token_ids", 99999999, 49152), 400, "stop_token_ids"),
    (EngineDeadError("boom"), 503, None),
])
def test_engine_failures_map_to_openai_errors(make_client, error, status, param):
    client = make_client(script="one two three four five six")
    _failing(client, error)
    err = _err(client.post(CHAT, json={"messages": MSG}), status, param=param)
    assert str(error) in err["message"]
    events = _events(client.post(CHAT, json={"messages": MSG, "stream": True}))
    assert events[-1] == "[DONE]" and set(events[-2]["error"]) == {"message", "type", "param", "code"}
    assert str(error) in events[-2]["error"]["message"]
    assert client.app.state.heron.active_seqs == 0 and client.app.state.heron.in_flight == 0


def test_completions_max_tokens_zero_with_echo(make_client):
    client = make_client()
    r = client.post(COMP, json={"prompt": "Hello world", "echo": True, "max_tokens": 0, "logprobs": 1}).json()
    choice = r["choices"][0]
    assert choice["text"] == "Hello world" and choice["finish_reason"] == "length"
    assert choice["logprobs"]["token_logprobs"][0] is None and r["usage"]["completion_tokens"] == 0
    assert len(choice["logprobs"]["tokens"]) == r["usage"]["prompt_tokens"]
    _err(client.post(CHAT, json={"messages": MSG, "max_tokens": 0}), 400, param="max_tokens")


def test_continuous_usage_on_completions_stream(make_client):
    client = make_client(script="a b c d")
    resp = client.post(COMP, json={"prompt": "hi", "stream": True,
                                   "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
    chunks = [e for e in _events(resp) if isinstance(e, dict)]
    assert all("usage" in e for e in chunks)
    counts = [e["usage"]["completion_tokens"] for e in chunks]
    assert counts == sorted(counts) and counts[-1] == chunks[-1]["usage"]["total_tokens"] - chunks[-1]["usage"]["prompt_tokens"]


def test_priority_needs_priority_scheduling(make_client):
    _err(make_client().post(CHAT, json={"messages": MSG, "priority": 3}), 400, param="priority")
    assert make_client(scheduling_policy="priority").post(CHAT, json={"messages": MSG, "priority": 3}).status_code == 200


def test_guided_json_object_constrains(make_client):
    client = make_client(script='{"a": 1}')
    assert client.post(CHAT, json={"messages": MSG, "guided_json_object": True}).status_code == 200
    assert client.engine.seen[-1][1].structured_outputs.json_object


def test_limit_flags_reach_the_template_and_grammar_limits():
    import argparse

    from heron.server.settings import add_serve_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--max-structured-enum-values", "10", "--structured-compile-timeout", "2.5",
                              "--chat-template-render-timeout", "0.5", "--max-json-depth", "8"])
    s = settings_from_args(args, environ={"HERON_MAX_STRUCTURED_REGEX_CHARS": "99", "HERON_MAX_N": "3"})
    limits = s.structured_limits()
    assert (limits.max_enum_values, limits.compile_timeout_s, limits.max_regex_chars) == (10, 2.5, 99)
    assert limits.max_schema_bytes == type(limits)().max_schema_bytes  # unset flags keep the defaults
    assert s.render_limits().timeout_s == 0.5 and s.max_json_depth == 8 and s.max_n == 3
