"""A real ``heron serve`` on the default model, driven by the official ``openai`` SDK and raw HTTP.

One server (with an API key and a small body cap) serves most tests; a second one with a queue of
one request (``--max-num-seqs 1 --max-waiting-requests 1``) shows the 503 backpressure and is then
stopped with SIGTERM while a request is in flight.
"""

from __future__ import annotations

import json
import signal
import threading

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, wait_until

pytestmark = pytest.mark.slow

KEY = "sk-heron-e2e"
MODEL = "SmolLM2-135M-Instruct"
BODY_CAP = 64 * 1024
MAX_LOGPROBS = 25  # above the engine's default of 20: the flag must reach the engine
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
IGNORE_EOS = {"ignore_eos": True}


# -- servers and clients ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--api-key", KEY, "--max-request-body-bytes", str(BODY_CAP),
                        "--kv-cache-memory-bytes", "96MiB", "--max-logprobs", str(MAX_LOGPROBS),
                        "--enable-request-id-headers") as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    # max_retries=0: the SDK would otherwise retry 5xx answers behind the test's back
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


def scrape(http: httpx.Client) -> dict[str, float]:
    """``/metrics`` as {"name{label=value,...}": value}, model_name label left out."""
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "model_name")
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def chat(client: openai.OpenAI, messages=QUESTION, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=messages, **kwargs)


def assert_error(response: httpx.Response, status: int, *, param: str | None = None, type: str | None = None,
                 code: str | None = None) -> dict:
    """The response is an OpenAI error object with exactly the four fields and the right status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], body
    assert err["param"] == param, body
    if type is not None:
        assert err["type"] == type, body
    if code is not None:
        assert err["code"] == code, body
    return err


# -- basic routes ---------------------------------------------------------------------------------


def test_model_card_tokenize_detokenize(client, http):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    card = models[0].model_dump()
    # SmolLM2 allows 8192 tokens; the 96 MiB KV cache holds fewer, and the card says what is served
    assert card["object"] == "model" and 0 < card["max_model_len"] <= 8192

    tok = http.post("/tokenize", json={"model": MODEL, "prompt": "Hello world"}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == card["max_model_len"]
    detok = http.post("/detokenize", json={"model": MODEL, "tokens": tok["tokens"]}).json()
    assert detok["prompt"] == "Hello world"

    # --enable-request-id-headers: the id comes back (and one is made up when none is sent)
    assert http.get("/v1/models", headers={"X-Request-Id": "e2e-42"}).headers["x-request-id"] == "e2e-42"
    assert http.get("/v1/models").headers["x-request-id"]

    # /tokenize on messages counts exactly the prompt a chat request uses
    rendered = http.post("/tokenize", json={"model": MODEL, "messages": QUESTION, "add_generation_prompt": True}).json()
    reply = chat(client, max_tokens=1)
    assert reply.usage.prompt_tokens == rendered["count"]


def test_api_key_guards_everything_but_probes(server, http):
    for path in ("/health", "/ping", "/version"):
        assert httpx.get(server.base_url + path).status_code == 200, path
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1)
    for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/load"), ("POST", "/tokenize")):
        assert_error(httpx.request(method, server.base_url + path, json={}), 401, type="authentication_error",
                     code="invalid_api_key")
    assert http.get("/v1/models").status_code == 200


# -- generation ----------------------------------------------------------------------------------


def test_chat_greedy_same_text_streaming_or_not(client):
    whole = chat(client, temperature=0, max_tokens=16)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and whole.model == MODEL
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")

    chunks = list(chat(client, temperature=0, max_tokens=16, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked for
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]


def test_completion_greedy_same_text_streaming_or_not(client):
    kwargs = dict(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8)
    whole = client.completions.create(**kwargs)
    assert whole.object == "text_completion" and whole.choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert whole.usage.completion_tokens <= 8


def test_n2_choices_have_distinct_indexes(client):
    whole = chat(client, n=2, temperature=1, seed=7, max_tokens=6)
    assert [c.index for c in whole.choices] == [0, 1]
    assert 2 <= whole.usage.completion_tokens <= 12  # both choices counted
    finishes: dict[int, list[str]] = {0: [], 1: []}
    roles: dict[int, int] = {0: 0, 1: 0}
    for chunk in chat(client, n=2, temperature=1, max_tokens=6, stream=True):
        assert len(chunk.choices) == 1
        c = chunk.choices[0]
        roles[c.index] += c.delta.role == "assistant"
        if c.finish_reason:
            finishes[c.index].append(c.finish_reason)
    assert roles == {0: 1, 1: 1}
    assert all(len(f) == 1 for f in finishes.values()), finishes

    legacy = client.completions.create(model=MODEL, prompt=["Once upon", "The sky is"], n=2, max_tokens=3,
                                       temperature=1)
    assert sorted(c.index for c in legacy.choices) == [0, 1, 2, 3]


def test_chat_logprobs_shape(client):
    whole = chat(client, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3, extra_body=IGNORE_EOS)
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens == 5
    assert "".join(e.token for e in content) == whole.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        # greedy: the chosen token is the most likely one
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)

    streamed = [e for c in chat(client, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3, stream=True,
                                extra_body=IGNORE_EOS)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, len(e.top_logprobs)) for e in streamed] == [(e.token, 3) for e in content]

    plain = chat(client, temperature=0, max_tokens=2, logprobs=True)
    assert all(e.top_logprobs == [] for e in plain.choices[0].logprobs.content)

    widest = chat(client, max_tokens=1, logprobs=True, top_logprobs=MAX_LOGPROBS)
    assert len(widest.choices[0].logprobs.content[0].top_logprobs) == MAX_LOGPROBS
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, max_tokens=1, logprobs=True, top_logprobs=MAX_LOGPROBS + 1)
    assert info.value.param == "top_logprobs"


def test_completion_logprobs_legacy_shape(client):
    kwargs = dict(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=5, logprobs=2,
                  extra_body=IGNORE_EOS)
    whole = client.completions.create(**kwargs)
    choice = whole.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == 0
    for i in range(1, 5):
        assert lp.text_offset[i] == lp.text_offset[i - 1] + len(lp.tokens[i - 1])
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value <= 0 and 1 <= len(top) <= 2
        assert max(top.values()) == pytest.approx(value, abs=1e-4) and token in top  # greedy

    chunks = list(client.completions.create(stream=True, **kwargs))
    tokens = [t for c in chunks for t in c.choices[0].logprobs.tokens]
    offsets = [o for c in chunks for o in c.choices[0].logprobs.text_offset]
    assert tokens == lp.tokens and offsets == lp.text_offset


def test_stop_strings(client):
    free = chat(client, [{"role": "user", "content": "List three prime numbers."}], temperature=0, max_tokens=16,
                extra_body=IGNORE_EOS).choices[0].message.content
    stop = next(free[i : i + 3] for i in range(4, len(free) - 3) if free[i : i + 3].strip() == free[i : i + 3])
    cut = chat(client, [{"role": "user", "content": "List three prime numbers."}], temperature=0, max_tokens=16,
               stop=[stop, "never-appears"], extra_body=IGNORE_EOS).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.message.content == free[: free.index(stop)]

    legacy = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", temperature=0, max_tokens=8, stop=" 7")
    assert legacy.choices[0].finish_reason == "stop" and " 7" not in legacy.choices[0].text


def test_stream_options_include_usage(client):
    whole = chat(client, temperature=0, max_tokens=4, extra_body=IGNORE_EOS)
    chunks = list(chat(client, temperature=0, max_tokens=4, stream=True, stream_options={"include_usage": True},
                       extra_body=IGNORE_EOS))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (whole.usage.prompt_tokens, 4)
    assert last.usage.total_tokens == whole.usage.prompt_tokens + 4

    legacy = list(client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, stream=True,
                                            stream_options={"include_usage": True}, extra_body=IGNORE_EOS))
    assert legacy[-1].choices == [] and legacy[-1].usage.completion_tokens == 3


def test_max_completion_tokens(client):
    reply = chat(client, max_completion_tokens=3, extra_body=IGNORE_EOS)
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"
    # max_completion_tokens wins over the deprecated max_tokens
    both = chat(client, max_completion_tokens=2, max_tokens=9, extra_body=IGNORE_EOS)
    assert both.usage.completion_tokens == 2


def test_seed_reproducibility(client):
    messages = [{"role": "user", "content": "Tell me a short story about a cat."}]
    first, second, other = (chat(client, messages, temperature=1, seed=seed, max_tokens=8,
                                 extra_body=IGNORE_EOS).choices[0].message.content for seed in (1234, 1234, 4321))
    assert first == second
    assert other != first
    legacy = [client.completions.create(model=MODEL, prompt="Once upon a time", temperature=1, seed=99,
                                        max_tokens=6).choices[0].text for _ in range(2)]
    assert legacy[0] == legacy[1]


# -- errors ----------------------------------------------------------------------------------------


def test_sdk_typed_errors(client):
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, temperature=-1, max_tokens=2)
    assert info.value.status_code == 400 and info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=-3)
    assert info.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=2)
    assert info.value.status_code == 404 and info.value.code == "model_not_found" and info.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)


CHAT = "/v1/chat/completions"
MSG = {"model": MODEL, "messages": QUESTION}

JSON = "application/json"
LEGACY = "/v1/completions"


def _body(**fields) -> bytes:
    return json.dumps(fields).encode()


BAD_REQUESTS = [
    # (id, path, body, content type, status, param)
    ("malformed-json", CHAT, b'{"model": "x", "messages": [', JSON, 400, None),
    ("not-an-object", CHAT, b"[1, 2]", JSON, 400, None),
    ("wrong-type-max-tokens", CHAT, _body(**MSG, max_tokens="many"), JSON, 400, "max_tokens"),
    ("wrong-type-messages", CHAT, _body(model=MODEL, messages="hello"), JSON, 400, "messages"),
    ("wrong-type-prompt", LEGACY, _body(model=MODEL, prompt={"a": 1}), JSON, 400, "prompt"),
    ("missing-messages", CHAT, _body(model=MODEL), JSON, 400, "messages"),
    ("negative-max-tokens", CHAT, _body(**MSG, max_tokens=-1), JSON, 400, "max_tokens"),
    ("negative-max-tokens-legacy", LEGACY, _body(model=MODEL, prompt="hi", max_tokens=-1), JSON, 400, "max_tokens"),
    ("zero-max-completion-tokens", CHAT, _body(**MSG, max_completion_tokens=0), JSON, 400, "max_completion_tokens"),
    ("temperature-minus-one", CHAT, _body(**MSG, temperature=-1), JSON, 400, "temperature"),
    ("n-zero", CHAT, _body(**MSG, n=0), JSON, 400, "n"),
    ("top-logprobs-too-many", CHAT, _body(**MSG, logprobs=True, top_logprobs=50), JSON, 400, "top_logprobs"),
    ("invalid-utf8", CHAT, _body(**MSG).replace(b"France", b"Fr\xff\xfence"), JSON, 400, None),
    ("not-json-content-type", CHAT, _body(**MSG), "text/plain", 415, None),
]


@pytest.mark.parametrize(("path", "body", "ctype", "status", "param"),
                         [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS])
def test_bad_request_gets_openai_error(http, path, body, ctype, status, param):
    response = http.post(path, content=body, headers={"Content-Type": ctype})
    assert_error(response, status, param=param, type="invalid_request_error")


def test_unknown_model_and_route_and_method(http):
    assert_error(http.post(CHAT, json={**MSG, "model": "gpt-4o", "max_tokens": 1}), 404, param="model",
                 type="not_found_error", code="model_not_found")
    assert_error(http.post(LEGACY, json={"model": "gpt-4o", "prompt": "hi"}), 404, param="model",
                 code="model_not_found")
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.get(CHAT), 405)


def test_oversized_body_gets_413(http):
    big = json.dumps({**MSG, "messages": [{"role": "user", "content": "x" * (BODY_CAP + 10)}]}).encode()
    assert_error(http.post(CHAT, content=big, headers={"Content-Type": "application/json"}), 413)

    def chunked():  # no Content-Length: the cap must hold while reading
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    assert_error(http.post(CHAT, content=chunked(), headers={"Content-Type": "application/json"}), 413)


def test_server_keeps_serving_after_errors(client, http):
    for _, path, body, ctype, _, _ in BAD_REQUESTS:
        http.post(path, content=body, headers={"Content-Type": ctype})
    reply = chat(client, max_tokens=2)
    assert reply.choices[0].message.content is not None
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/load").json()["server_load"] == 0


# -- aborts, metrics -------------------------------------------------------------------------------


def _idle(http: httpx.Client, aborted: float):
    m = scrape(http)
    return (m["heron:num_requests_running"] == 0 and m["heron:num_requests_waiting"] == 0
            and m["heron:kv_cache_usage_perc"] == 0
            and m["heron:request_success_total{finished_reason=abort}"] == aborted) and m


def test_disconnect_mid_stream_aborts_and_frees_blocks(server, http):
    aborted = scrape(http)["heron:request_success_total{finished_reason=abort}"]
    body = {**MSG, "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        with c.stream("POST", CHAT, json=body) as response:
            assert response.status_code == 200
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content":"' in line and '"role"' not in line:
                    seen += 1
                if seen == 3:
                    break
            busy = scrape(http)
            assert busy["heron:num_requests_running"] == 1 and busy["heron:kv_cache_usage_perc"] > 0
        # leaving the block closes the connection mid-stream
    wait_until(lambda: _idle(http, aborted + 1), 30, "the engine to drop the disconnected stream")
    assert http.get("/load").json()["server_load"] == 0


def test_disconnect_while_waiting_for_whole_response_aborts(http, server):
    aborted = scrape(http)["heron:request_success_total{finished_reason=abort}"]
    body = {"model": MODEL, "prompt": "Tell me a long story.", "max_tokens": 400, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=httpx.Timeout(60, read=2.0))
    wait_until(lambda: _idle(http, aborted + 1), 30, "the engine to drop the disconnected request")


def test_metrics_names(client, http):
    before = scrape(http).get("heron:request_queue_time_seconds_count", 0)
    chat(client, max_tokens=3, extra_body=IGNORE_EOS)
    client.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    m = scrape(http)
    assert m["heron:request_queue_time_seconds_count"] == before + 2  # chat and legacy completions both count
    names = {k.split("{")[0] for k in m}
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prompt_tokens_total",
                 "generation_tokens_total", "request_success_total", "num_preemptions_total",
                 "prefix_cache_queries_total", "prefix_cache_hits_total"):
        assert f"heron:{name}" in names, name
    for name in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                 "request_queue_time_seconds"):
        assert f"heron:{name}_bucket" in names and m[f"heron:{name}_count"] > 0, name
    assert m["heron:prompt_tokens_total"] > 0 and m["heron:generation_tokens_total"] >= 3
    assert m["heron:request_success_total{finished_reason=length}"] >= 1
    assert m["heron:prefix_cache_queries_total"] >= m["heron:prefix_cache_hits_total"] > 0


# -- a one-slot server: backpressure, then SIGTERM --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_server(request) -> ServerProcess:
    have_default_model()
    # a long drain timeout: on a busy 2-core machine a few tokens can take seconds
    with running_server(request, "--max-num-seqs", "1", "--max-waiting-requests", "1",
                        "--kv-cache-memory-bytes", "32MiB", "--drain-timeout", "120") as proc:
        yield proc


def test_full_queue_gets_503_with_retry_after(tiny_server):
    url = tiny_server.base_url
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    load = lambda: httpx.get(f"{url}/load").json()  # noqa: E731
    results: list = []
    with httpx.Client(base_url=url, timeout=120) as c:
        with c.stream("POST", CHAT, json={**MSG, "max_tokens": 300, "ignore_eos": True, "stream": True}) as running:
            wait_until(lambda: load()["num_requests_running"] == 1, 30, "the first request to run")
            waiter = threading.Thread(target=lambda: results.append(
                sdk.completions.create(model=MODEL, prompt="Hi", max_tokens=2)))
            waiter.start()
            wait_until(lambda: load()["num_requests_waiting"] == 1, 30, "the second request to queue")
            with pytest.raises(openai.InternalServerError) as info:
                sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
            err = info.value
            assert err.status_code == 503 and err.code == "queue_full"
            assert int(err.response.headers["retry-after"]) >= 1
            assert err.body["type"] == "service_unavailable"
            assert running.status_code == 200
        waiter.join(60)
    assert results and results[0].choices[0].text is not None
    assert sdk.completions.create(model=MODEL, prompt="Hi", max_tokens=1).choices  # serving again


def test_sigterm_finishes_in_flight_request_then_exits_0(tiny_server):
    url = tiny_server.base_url
    results: list = []

    def ask():
        r = httpx.post(f"{url}/v1/completions", timeout=120,
                       json={"model": MODEL, "prompt": "Tell me a story.", "max_tokens": 32, "ignore_eos": True})
        results.append(r)

    worker = threading.Thread(target=ask)
    worker.start()
    wait_until(lambda: httpx.get(f"{url}/load").json()["num_requests_running"] == 1, 30, "the request to run")
    tiny_server.proc.send_signal(signal.SIGTERM)
    worker.join(120)
    assert results, "the in-flight request got no answer"
    response = results[0]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 32
    assert tiny_server.proc.wait(timeout=60) == 0
    with pytest.raises(httpx.TransportError):  # stopped accepting
        httpx.get(f"{url}/health", timeout=2)
