"""vLLM's request and response fields on chat and completions (scripted engine), every answer
checked against OpenAI's published schemas (tests/openai_schemas)."""

from __future__ import annotations

import json

import pytest

from heron.chat import detect_content_format, normalize_messages
from tests.openai_schemas import validate

CHAT, COMP = "/v1/chat/completions", "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
SCRIPT = "Hello there, friend."


def _whole(client, path: str, body: dict) -> dict:
    resp = client.post(path, json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    echo_lp = path == COMP and body.get("echo") and body.get("logprobs") is not None
    validate(out, "CreateChatCompletionResponse" if path == CHAT else "CompletionEcho" if echo_lp
             else "CreateCompletionResponse")
    return out


def _stream(client, path: str, body: dict) -> list[dict]:
    resp = client.post(path, json={**body, "stream": True})
    assert resp.status_code == 200, resp.text
    lines = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    for c in chunks:
        validate(c, "CreateChatCompletionStreamResponse" if path == CHAT else "CompletionChunk")
    return chunks


def _error(resp, param: str) -> str:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param, err
    return err["message"]


def _prompt_text(client) -> str:
    return client.engine.tokenizer.decode(client.engine.seen[-1][0])


# -- wire shapes ---------------------------------------------------------------------------------


def test_chat_answer_has_openai_keys_and_vllm_empty_tool_calls(make_client):
    client = make_client(SCRIPT)
    body = _whole(client, CHAT, {"messages": MSG, "logprobs": True, "top_logprobs": 1})
    msg, choice = body["choices"][0]["message"], body["choices"][0]
    assert msg["tool_calls"] == [] and msg["refusal"] is None and msg["content"] == SCRIPT
    assert choice["logprobs"]["refusal"] is None and len(choice["logprobs"]["content"]) > 0
    assert "system_fingerprint" not in body and body["choices"][0]["token_ids"] is None
    assert "completion_tokens_details" in body["usage"]
    for chunk in _stream(client, CHAT, {"messages": MSG, "logprobs": True, "stream_options": {"include_usage": True}}):
        assert "system_fingerprint" not in chunk
        for c in chunk["choices"]:
            assert c["logprobs"] is None or c["logprobs"]["refusal"] is None


def test_completion_answers_validate(make_client):
    client = make_client(SCRIPT)
    for body in ({"prompt": "hi"}, {"prompt": ["a", "b"], "n": 2, "logprobs": 2},
                 {"prompt": "hi", "echo": True, "logprobs": 1, "max_tokens": 0}):
        whole = _whole(client, COMP, body)
        assert "system_fingerprint" not in whole and "completion_tokens_details" not in whole["usage"]
        _stream(client, COMP, {**body, "stream_options": {"include_usage": True}})
    models = client.get("/v1/models").json()
    validate(models, "ListModelsResponse")


# -- return_token_ids ----------------------------------------------------------------------------


def test_chat_return_token_ids(make_client):
    client = make_client(SCRIPT)
    tok = client.engine.tokenizer
    body = _whole(client, CHAT, {"messages": MSG, "return_token_ids": True})
    assert body["prompt_token_ids"] == client.engine.seen[-1][0]
    assert tok.decode(body["choices"][0]["token_ids"]) == SCRIPT
    chunks = _stream(client, CHAT, {"messages": MSG, "return_token_ids": True})
    assert chunks[0]["prompt_token_ids"] == body["prompt_token_ids"]
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    assert [t for c in chunks[1:] for t in c["choices"][0]["token_ids"]] == body["choices"][0]["token_ids"]
    plain = _whole(client, CHAT, {"messages": MSG})
    assert plain["prompt_token_ids"] is None and plain["choices"][0]["token_ids"] is None


def test_completion_return_token_ids(make_client):
    client = make_client(SCRIPT)
    tok = client.engine.tokenizer
    body = _whole(client, COMP, {"prompt": "hi", "return_token_ids": True})
    assert body["choices"][0]["prompt_token_ids"] == tok.encode("hi")
    assert tok.decode(body["choices"][0]["token_ids"]) == SCRIPT
    batch = _whole(client, COMP, {"prompt": [[1, 2, 3], [4, 5]], "n": 2, "return_token_ids": True})
    assert [c["prompt_token_ids"] for c in batch["choices"]] == [[1, 2, 3], [1, 2, 3], [4, 5], [4, 5]]
    chunks = _stream(client, COMP, {"prompt": "hi", "return_token_ids": True})
    assert chunks[0]["choices"][0]["prompt_token_ids"] == tok.encode("hi")
    assert all("prompt_token_ids" not in c["choices"][0] for c in chunks[1:])
    assert [t for c in chunks for t in c["choices"][0]["token_ids"]] == body["choices"][0]["token_ids"]


# -- return_tokens_as_token_ids ------------------------------------------------------------------


@pytest.mark.parametrize("by_flag", [False, True])
def test_tokens_as_token_ids(make_client, by_flag):
    client = make_client(SCRIPT, return_tokens_as_token_ids=by_flag)
    extra = {} if by_flag else {"return_tokens_as_token_ids": True}
    body = _whole(client, COMP, {"prompt": "hi", "logprobs": 1, "return_token_ids": True, **extra})
    choice = body["choices"][0]
    assert [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]] == choice["token_ids"]
    assert all(k.startswith("token_id:") for top in choice["logprobs"]["top_logprobs"] for k in top)
    chat = _whole(client, CHAT, {"messages": MSG, "logprobs": True, "top_logprobs": 2, **extra})
    entries = chat["choices"][0]["logprobs"]["content"]
    assert all(e["token"].startswith("token_id:") for e in entries)
    assert bytes(b for e in entries for b in e["bytes"]).decode() == SCRIPT  # bytes stay the text's
    if by_flag:  # the request's field wins over the flag
        off = _whole(client, COMP, {"prompt": "hi", "logprobs": 0, "return_tokens_as_token_ids": False})
        assert "".join(off["choices"][0]["logprobs"]["tokens"]) == SCRIPT


# -- smaller differences found by vLLM's tests ---------------------------------------------------


def test_completion_logprobs_hold_the_sampled_token_and_the_top_n(make_client):
    client = make_client(SCRIPT)
    zero = _whole(client, COMP, {"prompt": "hi", "logprobs": 0})["choices"][0]["logprobs"]
    assert all(list(top) == [tok] for top, tok in zip(zero["top_logprobs"], zero["tokens"], strict=True))
    five = _whole(client, COMP, {"prompt": "hi", "logprobs": 5})["choices"][0]["logprobs"]
    assert all(5 <= len(top) <= 6 and tok in top for top, tok in zip(five["top_logprobs"], five["tokens"], strict=True))
    echo = _whole(client, COMP, {"prompt": "hi there", "echo": True, "logprobs": 0, "max_tokens": 2})
    lp = echo["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(len(top) == 1 for top in lp["top_logprobs"][1:])


@pytest.mark.parametrize(("seed", "ok"), [(2**63 - 1, True), (-(2**63), True), (2**63, False), (-(2**63) - 1, False)])
def test_seed_must_fit_64_bits(make_client, seed, ok):
    client = make_client(SCRIPT)
    for path, body in ((CHAT, {"messages": MSG}), (COMP, {"prompt": "hi"})):
        resp = client.post(path, json={**body, "seed": seed})
        if ok:
            assert resp.status_code == 200, resp.text
        else:
            assert str(2**63 - 1 if seed > 0 else -(2**63)) in _error(resp, "seed")


def test_stream_options_need_stream(make_client):
    client = make_client(SCRIPT)
    for path, body in ((CHAT, {"messages": MSG}), (COMP, {"prompt": "hi"})):
        for opts in ({"include_usage": True}, {"include_usage": None}, {"continuous_usage_stats": True}):
            _error(client.post(path, json={**body, "stream_options": opts}), "stream_options")
        assert client.post(path, json={**body, "stream_options": {}}).status_code == 200
        assert client.post(path, json={**body, "stream": True, "stream_options": {"include_usage": None}}).status_code == 200


@pytest.mark.parametrize("path", [CHAT, COMP])
def test_continuous_usage_counts_every_chunk(make_client, path):
    client = make_client("a b c d e")
    body = {"messages": MSG} if path == CHAT else {"prompt": "hi"}
    chunks = _stream(client, path, {**body, "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
    assert all(c["usage"]["total_tokens"] == c["usage"]["prompt_tokens"] + c["usage"]["completion_tokens"]
               for c in chunks)
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    last = 0
    for chunk, count in zip(chunks, counts, strict=True):  # vLLM's check: every chunk adds tokens
        assert last == 0 or count > last or (not chunk["choices"] and count == last), counts
        last = count
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["usage"]["completion_tokens"] == 5 and chunks[-1]["choices"] == []
    plain = _stream(client, path, {**body, "stream_options": {"include_usage": False, "continuous_usage_stats": True}})
    assert all("usage" not in c for c in plain)


@pytest.mark.parametrize("path", [CHAT, COMP])
def test_force_include_usage(make_client, path):
    client = make_client(SCRIPT, enable_force_include_usage=True)
    body = {"messages": MSG} if path == CHAT else {"prompt": "hi"}
    chunks = _stream(client, path, body)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert all("usage" not in c for c in chunks[:-1])


def test_out_of_vocabulary_ids_name_the_id_and_the_vocabulary(make_client):
    client = make_client(SCRIPT)
    vocab = client.app.state.heron.vocab_size
    cases = ((COMP, {"prompt": [1, vocab + 3]}, "prompt", vocab + 3),
             (CHAT, {"messages": MSG, "allowed_token_ids": [vocab]}, "allowed_token_ids", vocab),
             (CHAT, {"messages": MSG, "logit_bias": {str(vocab + 1): 1}}, "logit_bias", vocab + 1))
    for path, body, param, bad in cases:
        message = _error(client.post(path, json=body), param)
        assert "out of vocabulary" in message and str(bad) in message and str(vocab) in message


# -- chat template inputs ------------------------------------------------------------------------


def test_add_special_tokens(make_client, monkeypatch):
    client = make_client(SCRIPT)
    tok = client.engine.tokenizer
    seen: list[bool] = []
    real = tok.encode
    monkeypatch.setattr(tok, "encode", lambda text, **kw: seen.append(kw.get("add_special_tokens")) or real(text, **kw))
    for path, body, default in ((CHAT, {"messages": MSG}, False), (COMP, {"prompt": "hi"}, True)):
        for value in (None, True, False):
            seen.clear()
            extra = {} if value is None else {"add_special_tokens": value}
            assert client.post(path, json={**body, **extra}).status_code == 200
            assert seen[0] is (default if value is None else value), (path, value)


TEMPLATE = ("{{ reasoning_effort }}|{{ enable_thinking }}|{{ (documents if documents is defined else none) | tojson }}|"
            "{{ tools | tojson }}|"
            "{% for m in messages %}{{ m['role'] }}={{ m['content'] | tojson }};{% endfor %}")


def test_reasoning_effort_and_documents_reach_the_template(make_client):
    client = make_client(SCRIPT, trust_request_chat_template=True)
    docs = [{"title": "t", "text": "x"}]
    client.post(CHAT, json={"messages": MSG, "chat_template": TEMPLATE, "reasoning_effort": "low", "documents": docs})
    assert _prompt_text(client).startswith('low|True|[{"title": "t", "text": "x"}]|')
    client.post(CHAT, json={"messages": MSG, "chat_template": TEMPLATE, "reasoning_effort": "none"})
    assert _prompt_text(client).startswith("none|False|")
    client.post(CHAT, json={"messages": MSG, "chat_template": TEMPLATE, "reasoning_effort": "none",
                            "chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": "high"}})
    assert _prompt_text(client).startswith("high|True|")  # chat_template_kwargs win
    _error(client.post(CHAT, json={"messages": MSG, "reasoning_effort": "extreme"}), "reasoning_effort")


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("exclude", [False, True])
def test_exclude_tools_when_tool_choice_none(make_client, exclude):
    client = make_client(SCRIPT, trust_request_chat_template=True, exclude_tools_when_tool_choice_none=exclude,
                         enable_auto_tool_choice=True, tool_call_parser="hermes")
    body = {"messages": MSG, "chat_template": TEMPLATE, "tools": TOOLS}
    assert client.post(CHAT, json={**body, "tool_choice": "none"}).status_code == 200
    assert ('"name": "f"' in _prompt_text(client)) is not exclude
    assert client.post(CHAT, json=body).status_code == 200  # "auto": the tools are always rendered
    assert '"name": "f"' in _prompt_text(client)


LOOPING = "{% for message in messages %}{% for part in message['content'] %}[{{ part['text'] }}]{% endfor %}{% endfor %}"
SET_ALIAS = "{% set msgs = messages[1:] %}{% for m in msgs %}{% for c in m.content %}{{ c.text }}{% endfor %}{% endfor %}"


def test_content_format_detection_and_shapes(tokenizer):
    assert detect_content_format(tokenizer.chat_template) == "string"
    assert detect_content_format(LOOPING) == "openai" and detect_content_format(SET_ALIAS) == "openai"
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
             {"role": "assistant", "content": "c"}]
    assert [m["content"] for m in normalize_messages(parts, "string")] == ["a\nb", "c"]
    assert [m["content"] for m in normalize_messages(parts, "openai")] == [
        [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], [{"type": "text", "text": "c"}]]
    with pytest.raises(ValueError, match="image_url"):
        normalize_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


@pytest.mark.parametrize(("setting", "template", "expected"), [
    ("auto", LOOPING, "[hi][there]"), ("openai", LOOPING, "[hi][there]"), ("string", TEMPLATE, '"hi\\nthere"'),
    ("openai", TEMPLATE, '[{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]'),
])
def test_content_format_setting_shapes_what_the_template_sees(make_client, setting, template, expected):
    client = make_client(SCRIPT, trust_request_chat_template=True, chat_template_content_format=setting)
    content = [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]
    assert client.post(CHAT, json={"messages": [{"role": "user", "content": content}],
                                   "chat_template": template}).status_code == 200
    assert expected in _prompt_text(client)


def test_response_role_and_service_tier(make_client):
    client = make_client(SCRIPT, response_role="bot")
    body = client.post(CHAT, json={"messages": MSG, "service_tier": "flex"}).json()  # (role "bot" is not OpenAI's)
    assert body["choices"][0]["message"]["role"] == "bot" and body["service_tier"] == "flex"
    chunks = _stream(make_client(SCRIPT), CHAT, {"messages": MSG, "service_tier": "default"})
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and all(c["service_tier"] == "default" for c in chunks)
    continued = client.post(CHAT, json={"messages": MSG, "add_generation_prompt": False}).json()
    assert continued["choices"][0]["message"]["role"] == "user"  # vLLM: the last message's role
    assert _whole(make_client(SCRIPT), CHAT, {"messages": MSG})["service_tier"] is None
    _error(client.post(CHAT, json={"messages": MSG, "service_tier": "gold"}), "service_tier")


def test_top_logprobs_zero_needs_no_logprobs(make_client):
    client = make_client(SCRIPT)
    assert client.post(CHAT, json={"messages": MSG, "top_logprobs": 0}).status_code == 200
    _error(client.post(CHAT, json={"messages": MSG, "top_logprobs": 1}), "top_logprobs")


# -- structural tags -----------------------------------------------------------------------------

LEGACY_TAG = {"type": "structural_tag", "triggers": ["<f="],
              "structures": [{"begin": "<f=get>", "schema": {"type": "object", "properties": {"a": {"type": "integer"}},
                                                             "required": ["a"]}, "end": "</f>"}]}
TAG = {"type": "structural_tag", "format": {"type": "const_string", "value": "Hello there, friend."}}


def test_structural_tag_response_format_reaches_the_engine(make_client):
    client = make_client(SCRIPT)
    for fmt in (TAG, LEGACY_TAG):
        assert client.post(CHAT, json={"messages": MSG, "response_format": fmt}).status_code == 200
        sent = json.loads(client.engine.seen[-1][1].structured_outputs.structural_tag)
        assert sent == fmt
    assert client.post(COMP, json={"prompt": "hi", "structured_outputs": {"structural_tag": json.dumps(TAG)}}).status_code == 200
    assert json.loads(client.engine.seen[-1][1].structured_outputs.structural_tag) == TAG
    _error(client.post(CHAT, json={"messages": MSG, "response_format": {"type": "structural_tag"}}), "response_format")


def test_structural_tags_compile_and_constrain(tokenizer):
    from heron.structured import GrammarBackend, StructuredOutputError, StructuredOutputsParams

    backend = GrammarBackend(tokenizer)
    try:
        matcher = backend.new_matcher(backend.compile(StructuredOutputsParams(structural_tag=json.dumps(TAG))))
        for tid in tokenizer.encode(SCRIPT, add_special_tokens=False):
            assert matcher.accept(tid)
        legacy = backend.new_matcher(backend.compile(StructuredOutputsParams(structural_tag=json.dumps(LEGACY_TAG))))
        assert all(legacy.accept(t) for t in tokenizer.encode('free text <f=get>{"a": 1}</f>',
                                                                     add_special_tokens=False))
        bad = StructuredOutputsParams(structural_tag=json.dumps({"type": "structural_tag", "format": {"type": "bogus"}}))
        with pytest.raises(StructuredOutputError, match="structural tag"):
            backend.compile(bad)
    finally:
        backend.shutdown()


def test_tool_call_answers_validate(make_client):
    call = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    client = make_client(call, enable_auto_tool_choice=True, tool_call_parser="hermes")
    body = {"messages": MSG, "tools": TOOLS}
    whole = _whole(client, CHAT, body)
    calls = whole["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["f"] and whole["choices"][0]["finish_reason"] == "tool_calls"
    chunks = _stream(client, CHAT, body)
    assert any(d.get("tool_calls") for c in chunks for d in [c["choices"][0]["delta"]])
