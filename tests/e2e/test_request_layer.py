"""Hostile clients against a real ``heron serve``: every bad request is a clear 4xx, and the
server stays healthy, leaks no KV block and keeps answering other clients.

One server (``--trust-request-chat-template``, a queue of two sequences beyond two running ones)
takes the hostile requests of issue 12 one after another, then a burst that must meet
backpressure, then two requests sharing one client request id.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, wait_until

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "Say hi"}]
VOCAB = 49152  # SmolLM2's


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--trust-request-chat-template", "--max-num-seqs", "2",
                        "--max-waiting-requests", "2", "--kv-cache-memory-bytes", "64MiB") as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        yield c


def _chat(**extra) -> dict:
    return {"model": MODEL, "messages": HI, "max_tokens": 4, **extra}


def _completion(**extra) -> dict:
    return {"model": MODEL, "prompt": "Hello", "max_tokens": 4, **extra}


def _nested(depth: int) -> bytes:
    return b'{"model": "%s", "messages": ' % MODEL.encode() + b"[" * depth + b"]" * depth + b"}"


HOSTILE = [
    # (name, route, body (dict or raw bytes), status, param or None)
    ("allowed id past the vocabulary", "/v1/chat/completions", _chat(allowed_token_ids=[10_000_000]), 400,
     "allowed_token_ids"),
    ("stop id past the vocabulary with min_tokens", "/v1/chat/completions",
     _chat(stop_token_ids=[10_000_000], min_tokens=2), 400, "stop_token_ids"),
    ("negative allowed id", "/v1/completions", _completion(allowed_token_ids=[-1]), 400, "allowed_token_ids"),
    ("negative stop id", "/v1/completions", _completion(stop_token_ids=[-3]), 400, "stop_token_ids"),
    ("logit_bias key past the vocabulary", "/v1/chat/completions", _chat(logit_bias={str(VOCAB + 5): 5}), 400,
     "logit_bias"),
    ("negative logit_bias key", "/v1/completions", _completion(logit_bias={"-2": 1}), 400, "logit_bias"),
    ("negative prompt token id", "/v1/completions", _completion(prompt=[1, -5, 2]), 400, "prompt"),
    ("body nested 100,000 arrays deep", "/v1/chat/completions", _nested(100_000), 400, None),
    ("2,000 prompts x n=128", "/v1/completions", _completion(prompt=["hi"] * 2000, n=128), 400, "prompt"),
    ("n=129", "/v1/completions", _completion(n=129), 400, "n"),
    ("100,000 stop strings", "/v1/chat/completions", _chat(stop=[f"s{i}" for i in range(100_000)]), 400, "stop"),
    ("a stop string of 100,000 characters", "/v1/completions", _completion(stop=["x" * 100_000]), 400, "stop"),
    ("10,000 bad words", "/v1/completions", _completion(bad_words=[f"w{i}" for i in range(10_000)]), 400,
     "bad_words"),
    ("40,000 logit_bias entries", "/v1/completions", _completion(logit_bias={str(i): 1 for i in range(40_000)}),
     400, "logit_bias"),
    ("1,000 tools", "/v1/chat/completions",
     _chat(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(1000)]), 400, "tools"),
    ("a 200,000-value enum", "/v1/chat/completions",
     _chat(response_format={"type": "json_schema", "json_schema": {
         "name": "e", "schema": {"type": "string", "enum": [f"v{i}" for i in range(200_000)]}}}), 400,
     "response_format"),
    ("a template repeating a string 10**9 times", "/v1/chat/completions", _chat(chat_template="{{ 'a' * 10**9 }}"),
     400, "chat_template"),
    ("a template doubling a string 60 times", "/v1/chat/completions",
     _chat(chat_template="{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}"
                         "{% endfor %}{{ ns.x }}"), 400, "chat_template"),
    ("truncate_prompt_tokens -2", "/v1/completions", _completion(truncate_prompt_tokens=-2), 400,
     "truncate_prompt_tokens"),
    ("legacy functions", "/v1/chat/completions", _chat(functions=[{"name": "f"}]), 400, "functions"),
    ("prompt_logprobs while streaming", "/v1/completions", _completion(prompt_logprobs=1, stream=True), 400,
     "prompt_logprobs"),
]


def _send(http: httpx.Client, route: str, body) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(route, content=content, headers={"content-type": "application/json"})


def _assert_idle(http: httpx.Client) -> None:
    """Nothing running, nothing waiting, no KV block held."""
    def idle():
        load = http.get("/load").json()
        return load if (load["num_requests_running"] == 0 and load["num_requests_waiting"] == 0
                        and load["kv_cache_usage_perc"] == 0.0) else None

    wait_until(idle, 30, "the server to go idle with no KV block held")


def test_hostile_requests_in_a_row_get_4xx_and_the_server_stays_healthy(http):
    slow = []
    for name, route, body, status, param in HOSTILE:
        start = time.monotonic()
        r = _send(http, route, body)
        took = time.monotonic() - start
        assert r.status_code == status, f"{name}: {r.status_code} {r.text[:400]}"
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], (name, err)
        assert err["type"] == "invalid_request_error", (name, err)
        if param is not None:
            assert err["param"] == param, (name, err)
        if took > 10:
            slow.append((name, round(took, 1)))
        assert http.get("/health").status_code == 200, f"unhealthy after {name}"
    assert not slow, f"hostile requests that took more than 10 s to refuse: {slow}"
    _assert_idle(http)
    # and the server still serves
    ok = http.post("/v1/chat/completions", json=_chat(temperature=0))
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_token_id_errors_name_the_bad_value(http):
    r = _send(http, "/v1/chat/completions", _chat(allowed_token_ids=[5, 10_000_000]))
    assert r.status_code == 400 and "10000000" in r.json()["error"]["message"]


def test_a_burst_meets_backpressure_counting_sequences(server, http):
    """--max-num-seqs 2 --max-waiting-requests 2: of ten simultaneous requests, four get in."""
    body = _completion(max_tokens=40, ignore_eos=True, temperature=0)

    def one(_):
        with httpx.Client(base_url=server.base_url, timeout=120) as c:
            return c.post("/v1/completions", json=body)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(one, range(10)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 4 + [503] * 6, statuses
    refused = [r for r in answers if r.status_code == 503]
    assert all(r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"] for r in refused)
    _assert_idle(http)

    # sequences, not requests: n=3 fills both running slots and one waiting one
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(lambda: httpx.post(server.base_url + "/v1/completions", timeout=120,
                                               json=_completion(n=3, max_tokens=60, ignore_eos=True)))
        time.sleep(0.5)
        second = pool.submit(lambda: httpx.post(server.base_url + "/v1/completions", timeout=120,
                                                json=_completion(max_tokens=40, ignore_eos=True)))
        time.sleep(0.5)
        third = httpx.post(server.base_url + "/v1/completions", json=_completion(), timeout=120)
        assert third.status_code == 503, third.text
        assert first.result().status_code == 200 and second.result().status_code == 200
    _assert_idle(http)


def test_two_requests_with_one_request_id_both_finish(server, http):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)

    def one(_):
        return client.completions.create(model=MODEL, prompt="Count: one two", max_tokens=24, temperature=0,
                                         extra_body={"ignore_eos": True, "request_id": "same-id"})

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(one, range(2))
    for reply in (a, b):
        assert reply.id == "cmpl-same-id"
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 24
    assert a.choices[0].text and b.choices[0].text  # (bf16: batched greedy text may differ slightly)
    # the X-Request-Id header works the same way
    r = http.post("/v1/chat/completions", json=_chat(), headers={"X-Request-Id": "hdr-1"})
    assert r.status_code == 200 and r.json()["id"] == "chatcmpl-hdr-1"
    _assert_idle(http)


# -- fields that change the answer ---------------------------------------------------------------


def test_echo_logprobs_with_zero_max_tokens_scores_the_prompt(http):
    """lm-evaluation-harness's log-likelihood request: the prompt and its tokens' logprobs."""
    prompt = "The capital of France is Paris"
    n_tokens = http.post("/tokenize", json={"prompt": prompt}).json()["count"]
    body = {"model": MODEL, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0, "temperature": 0}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == prompt and len(lp["tokens"]) == n_tokens
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v is not None and v <= 0 for v in lp["token_logprobs"][1:])
    assert all(len(top) >= 1 for top in lp["top_logprobs"][1:])
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(n_tokens)]
    assert r.json()["usage"]["completion_tokens"] == 0

    # one generated token: the prompt part is the same, the new token follows
    one = http.post("/v1/completions", json={**body, "max_tokens": 1}).json()["choices"][0]["logprobs"]
    assert len(one["tokens"]) == n_tokens + 1
    assert one["token_logprobs"][:n_tokens][1:] == pytest.approx(lp["token_logprobs"][1:], abs=1e-4)

    # and vLLM's prompt_logprobs say the same in their own shape
    plp = http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1,
                                             "prompt_logprobs": 0}).json()["choices"][0]["prompt_logprobs"]
    ids = http.post("/tokenize", json={"prompt": prompt}).json()["tokens"]
    assert plp[0] is None and len(plp) == n_tokens
    for pos in range(1, n_tokens):
        entry = plp[pos][str(ids[pos])]
        assert entry["logprob"] == pytest.approx(lp["token_logprobs"][pos], abs=1e-4)
        assert entry["rank"] >= 1 and entry["decoded_token"] == lp["tokens"][pos]


def test_streamed_echo_logprobs_match_the_whole_answer(http):
    body = {"model": MODEL, "prompt": "One, two, three,", "echo": True, "logprobs": 2, "max_tokens": 4,
            "temperature": 0}
    whole = http.post("/v1/completions", json=body).json()["choices"][0]
    tokens, values, text = [], [], ""
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                text += choice["text"]
                if choice["logprobs"]:
                    tokens += choice["logprobs"]["tokens"]
                    values += choice["logprobs"]["token_logprobs"]
    assert text == whole["text"] and tokens == whole["logprobs"]["tokens"]
    assert values[0] is None and values[1:] == pytest.approx(whole["logprobs"]["token_logprobs"][1:], abs=1e-4)


def test_chat_prompt_logprobs_in_vllm_shape(http):
    r = http.post("/v1/chat/completions", json=_chat(prompt_logprobs=2, temperature=0)).json()
    plp = r["prompt_logprobs"]
    assert len(plp) == r["usage"]["prompt_tokens"] and plp[0] is None
    for entry in plp[1:]:
        assert 1 <= len(entry) <= 3
        assert all(set(v) == {"logprob", "rank", "decoded_token"} and v["logprob"] <= 0 for v in entry.values())
        assert any(v["rank"] == 1 for v in entry.values())


def test_continuous_usage_stats_on_every_chunk(http):
    body = _chat(max_tokens=6, ignore_eos=True, stream=True,
                 stream_options={"include_usage": True, "continuous_usage_stats": True})
    usages = []
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usages.append(json.loads(line[6:])["usage"])
    completion = [u["completion_tokens"] for u in usages]
    assert len(usages) >= 3 and completion == sorted(completion) and completion[-1] == 6
    assert all(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] for u in usages)


def test_chat_echo_continues_the_final_message(http):
    start = "The three primary colours are"
    messages = [{"role": "user", "content": "Name the primary colours."}, {"role": "assistant", "content": start}]
    body = {"model": MODEL, "messages": messages, "echo": True, "continue_final_message": True,
            "add_generation_prompt": False, "max_tokens": 5, "temperature": 0}
    whole = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    assert whole.startswith(start) and len(whole) > len(start)
    streamed = ""
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    streamed += c["delta"].get("content") or ""
    assert streamed == whole


def test_truncate_prompt_tokens(http):
    long = "word " * 400
    r = http.post("/v1/completions", json=_completion(prompt=long, truncate_prompt_tokens=5)).json()
    assert r["usage"]["prompt_tokens"] == 5
    max_len = http.get("/v1/models").json()["data"][0]["max_model_len"]
    r = http.post("/v1/completions", json=_completion(prompt="word " * (max_len + 50), truncate_prompt_tokens=-1,
                                                      max_tokens=1)).json()
    assert r["usage"]["prompt_tokens"] == max_len - 1 and r["usage"]["completion_tokens"] == 1
