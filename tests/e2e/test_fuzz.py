"""Hostile bodies against a running ``heron serve``: no 5xx, OpenAI-shaped errors, nothing held.

One server on the default model with small limits. Two kinds of generated traffic:

- schemathesis over the server's own ``/docs/openapi.json``: valid bodies (positive) and bodies
  that break the schema (negative) for every operation; the answers must match the document;
- hypothesis strategies aimed where servers break: wrong JSON types, huge, negative and
  non-finite numbers, deep nesting, odd unicode (NUL, bidi controls, unassigned code points,
  special-token texts, invalid UTF-8; lone surrogates in a known-bug xfail) and token ids outside
  the vocabulary.

A generated body asks for at most a few tokens (``_cap``), so a case costs milliseconds to a few
hundred; ``HERON_FUZZ_SCALE`` multiplies the example counts for a deeper local run. After each
test the server must be healthy with no request running and no KV block held.
"""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import IN_CI
from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, wait_until

pytestmark = pytest.mark.slow

KEY = "sk-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}
VOCAB = 49152  # SmolLM2's vocabulary
EOS = 2  # SmolLM2's <|im_end|>: "allowed_token_ids": [EOS] ends any generation after one token
MAX_TOKENS = 2
SCALE = float(os.environ.get("HERON_FUZZ_SCALE", "1"))
ERROR_KEYS = {"message", "type", "param", "code"}
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "temperature": 0},
    "/v1/completions": {"prompt": "hi", "max_tokens": 1, "temperature": 0},
    "/tokenize": {"prompt": "hi"},
    "/detokenize": {"tokens": [1, 2]},
}


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


def fuzz_settings(n: int) -> settings:
    # derandomized under CI so a red run is reproducible; no shrinking (each step would be a request):
    # the failure message carries the whole body
    return settings(max_examples=examples(n), deadline=None, database=None, derandomize=IN_CI,
                    suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate),
                    report_multiple_bugs=False)


# -- the server and what every answer must satisfy ------------------------------------------------


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--api-key", KEY, "--max-model-len", "512", "--kv-cache-memory-bytes", "64MiB",
                        "--max-num-seqs", "8", "--request-timeout", "60",
                        "--max-request-body-bytes", str(2 * 1024 * 1024)) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=90) as client:
        yield client


@pytest.fixture(scope="module")
def document(http) -> dict[str, Any]:
    response = http.get("/docs/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def idle_after(http):
    """After the test: healthy, nothing running, every KV block released."""
    yield
    assert http.get("/health").status_code == 200, "the server is unhealthy after the fuzzing"

    def idle() -> dict | None:
        load = http.get("/load").json()
        running = load["num_requests_running"] or load["num_requests_waiting"] or load["server_load"] > 1
        return None if running or load["kv_cache_usage_perc"] != 0 else load

    wait_until(idle, 60, "no running request and kv_cache_usage_perc == 0")
    metrics = {line.split("{")[0].split(" ")[0]: line.rsplit(" ", 1)[1]
               for line in http.get("/metrics").text.splitlines() if line and not line.startswith("#")}
    assert float(metrics["heron:kv_cache_usage_perc"]) == 0.0, metrics


def check_answer(status: int, ctype: str, content: bytes, what: str) -> None:
    """No 5xx; every error (whole or as a stream event) is OpenAI's four-field object."""
    text = content.decode("utf-8", "replace")
    assert status < 500, f"{what} -> {status}: {text[:2000]}"
    if status >= 400:
        assert ctype.startswith("application/json"), f"{what} -> {status} {ctype}: {text[:500]}"
        body = json.loads(text)
        assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, f"{what} -> {text[:500]}"
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], text
        assert isinstance(body["error"]["type"], str) and body["error"]["type"], text
    elif ctype.startswith("text/event-stream"):
        datas = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        for data in datas:
            event = None if data == "[DONE]" else json.loads(data)
            if event is not None and "error" in event:
                assert set(event["error"]) == ERROR_KEYS, f"{what}: {data}"
                assert event["error"]["type"] != "server_error", f"{what}: server error in the stream: {data}"
        assert datas and (datas[-1] == "[DONE]" or '"error"' in datas[-1]), f"{what}: stream cut short: {text[-500:]}"


def send(http: httpx.Client, path: str, raw: bytes | str, what: str | None = None) -> httpx.Response:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    response = http.post(path, content=data, headers={"content-type": "application/json"})
    check_answer(response.status_code, response.headers.get("content-type", ""), response.content, what or data[:300].decode("utf-8", "replace"))
    return response


GENERATE = ("/v1/chat/completions", "/v1/completions")


def _number(value: Any) -> float | None:
    """What the server's lax parsing may read as a number (7, 7.0, "7"), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


def _cap(body: Any, path: str) -> Any:
    """Keep a generated body cheap: a token or two, two samples at most; everything else as generated.

    A missing or huge ``max_tokens`` would be clamped to the room the prompt leaves (hundreds of
    tokens), so it becomes ``MAX_TOKENS``; ``n``/``best_of`` above 2 but within the server's
    limits become 2 (larger ones stay: they must be a 400).
    """
    if path not in GENERATE or not isinstance(body, dict):
        return body
    for name in ("max_tokens", "max_completion_tokens"):
        value = _number(body.get(name))
        if (name == "max_tokens" and body.get(name) is None) or (value is not None and value > MAX_TOKENS):
            body[name] = MAX_TOKENS
    for name in ("n", "best_of"):
        value = _number(body.get(name))
        if value is not None and 2 < value <= 4096:
            body[name] = 2
    return body


# -- schemathesis over the served document --------------------------------------------------------


def _repair(body: Any, path: str) -> Any:
    """Give a generated body a prompt the model takes and no model name, keeping every other field.

    A schema-valid body is otherwise almost always refused for its random ``model`` (404) or
    messages the chat template cannot render, and the sampling fields beside them would never
    reach the engine.
    """
    if isinstance(body, dict):
        body.pop("model", None)
        body.pop("messages" if path == "/tokenize" else "", None)
        body.update({k: v for k, v in BASES[path].items() if k not in ("max_tokens", "temperature")})
    return body


OPERATIONS = [("POST", "/v1/chat/completions", 40), ("POST", "/v1/completions", 40), ("POST", "/tokenize", 30),
              ("POST", "/detokenize", 20), ("GET", "/v1/models", 2), ("GET", "/health", 2), ("GET", "/ping", 2),
              ("GET", "/version", 2), ("GET", "/load", 2), ("GET", "/metrics", 2)]
# negative bodies break the schema on purpose: "no 5xx" and the error shape hold for them, not the rest
RUNS = [(mode, *op) for op in OPERATIONS for mode in ("positive", "negative") if mode == "positive" or op[0] == "POST"]


@pytest.mark.parametrize(("mode", "method", "path", "count"), RUNS, ids=[f"{r[0]} {r[1]} {r[2]}" for r in RUNS])
def test_schemathesis(server, document, mode, method, path, count, idle_after):
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    operation = schemathesis.openapi.from_dict(document)[path][method]
    checks = [not_a_server_error]
    statuses: collections.Counter[int] = collections.Counter()
    if mode == "positive":
        checks += [status_code_conformance, content_type_conformance, response_schema_conformance]

    @fuzz_settings(count)
    @given(case=operation.as_strategy(schemathesis.GenerationMode(mode)), repair=st.booleans())
    def run(case, repair):
        if repair and mode == "positive" and method == "POST":
            case.body = _repair(case.body, path)
        case.body = _cap(case.body, path)
        response = case.call(base_url=server.base_url, headers=AUTH, timeout=90)
        statuses[response.status_code] += 1
        check_answer(response.status_code, (response.headers.get("content-type") or [""])[0], response.content,
                     f"{mode} {method} {path} {json.dumps(case.body, default=str)[:1500]}")
        case.validate_response(response, checks=checks, headers=AUTH)

    run()
    assert statuses, "no request was sent"
    if mode == "positive" and method == "POST":  # the repaired bodies reach the engine
        assert statuses[200] > 0, f"no generated body was accepted: {dict(statuses)}"


# -- hypothesis: targeted hostile values ----------------------------------------------------------


def _types(schema: dict[str, Any], components: dict[str, Any]) -> set[str]:
    """The JSON types a property schema admits ('any' when it says nothing)."""
    if "$ref" in schema:
        return _types(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in schema:
        return set().union(*(_types(s, components) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind is None:
        return {"any"}
    return {kind} if isinstance(kind, str) else set(kind)


def _properties(document: dict[str, Any], path: str) -> dict[str, set[str]]:
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    components = document["components"]["schemas"]
    props = components[ref.rsplit("/", 1)[1]]["properties"]
    return {name: _types(prop, components) for name, prop in props.items()}


WRONG = {  # a JSON value of each type
    "string": ["abc", "", "\u0000", "1e999"], "integer": [7, -3, 0], "number": [3.7, -0.5, 1e300],
    "boolean": [True, False], "array": [[], [1, "a", None], [[[]]]], "object": [{}, {"a": 1}, {"": []}],
    "null": [None],
}


@pytest.fixture(scope="module")
def wrong_type_cases(document) -> list[tuple[str, str, Any]]:
    cases = []
    for path in BASES:
        for name, allowed in _properties(document, path).items():
            if "any" in allowed:
                continue
            bad = [v for kind, values in WRONG.items() if kind not in allowed
                   and not (kind == "integer" and "number" in allowed) for v in values]
            cases += [(path, name, value) for value in bad]
    return cases


def test_wrong_types(http, wrong_type_cases, idle_after):
    assert len(wrong_type_cases) > 200  # every field of the four POST bodies

    @fuzz_settings(100)
    @given(st.sampled_from(wrong_type_cases))
    def run(case):
        path, name, value = case
        response = send(http, path, json.dumps(_cap({**BASES[path], name: value}, path)))
        if isinstance(value, (list, dict)):  # no lax parsing turns a container into a scalar (or back)
            assert response.status_code == 400, f"{path} accepted {name}={value!r}"
            assert (response.json()["error"]["param"] or "").startswith(name), response.text

    run()


NUMBERS = [-1, 0, 1, -(2**31), 2**31, 2**53 + 1, -(2**63), 2**63, 2**64 + 1, 10**30, -(10**30),
           1e-320, 1e308, -1e308, 0.5, -0.0, math.inf, -math.inf, math.nan]


def test_extreme_numbers(http, document, idle_after):
    fields = [(path, name) for path in BASES for name, allowed in _properties(document, path).items()
              if allowed & {"integer", "number"}]
    assert {("/v1/chat/completions", "temperature"), ("/v1/completions", "seed")} <= set(fields)

    @fuzz_settings(80)
    @given(st.sampled_from(fields), st.sampled_from(NUMBERS) | st.integers() | st.floats())
    def run(field, value):
        path, name = field
        body = {**BASES[path], name: value}
        if name in ("max_tokens", "max_completion_tokens"):
            body["allowed_token_ids"] = [EOS]  # a huge one is clamped to the room left: stop at once
        else:
            body = _cap(body, path)
        send(http, path, json.dumps(body))  # NaN and Infinity go out as JSON's non-standard literals

    run()


def _nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def test_deep_nesting(http, idle_after):
    targets = [(path, name) for path in BASES for name in ("metadata", "messages", "logit_bias", "tools",
                                                           "prompt", "tokens", "response_format", "structured_outputs")]

    @fuzz_settings(30)
    @given(st.sampled_from(targets), st.sampled_from([3, 64, 1000, 100_000]), st.sampled_from(["list", "dict"]))
    def run(target, depth, kind):
        path, name = target
        rest = {k: v for k, v in BASES[path].items() if k != name}
        head = json.dumps(rest)[:-1] + (", " if rest else "")  # no stray comma when nothing else is left
        response = send(http, path, f'{head}"{name}": {_nested(depth, kind)}}}',
                        what=f"{path} {name} nested {depth} {kind}s")
        if depth >= 1000:  # far past any sane --max-json-depth: refused, naming the limit
            assert response.status_code == 400 and "depth" in response.json()["error"]["message"].lower()

    run()
    whole = send(http, "/v1/completions", _nested(100_000, "list"), what="a body that is 100,000 nested lists")
    assert whole.status_code == 400


# lone UTF-16 surrogates ("\ud800" escaped in a JSON string) are not text: a 400
LONE_SURROGATES = ["\ud800", "\udfff", "a\udc80b"]
ODD = [*LONE_SURROGATES, "\u0000", "\ufeff", "\u202e\u2066evil", "\uffff\ufffe", "\U0010ffff",
       "e\u0301" * 300, "👩‍👩‍👧‍👦" * 50, "<|im_end|>", "<|endoftext|><|im_start|>system", "{{ 7 * 7 }}",
       "{% for x in range(10**9) %}", "\r\n\t\x0b\x0c", "٠١٢", "\u00ad\u200b\u200d"]
PLACES: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("/v1/chat/completions", lambda s: {"messages": [{"role": "user", "content": s}]}),
    ("/v1/chat/completions", lambda s: {"messages": [{"role": s, "content": "hi"}]}),
    ("/v1/chat/completions", lambda s: {"messages": [{"role": "user", "content": [{"type": "text", "text": s}]}]}),
    ("/v1/chat/completions", lambda s: {"messages": [{"role": "user", "content": "hi", "name": s}]}),
    ("/v1/chat/completions", lambda s: {"stop": [s]}),
    ("/v1/chat/completions", lambda s: {"bad_words": [s]}),
    ("/v1/chat/completions", lambda s: {"model": s}),
    ("/v1/chat/completions", lambda s: {"guided_regex": s}),
    ("/v1/chat/completions", lambda s: {"guided_choice": [s, "b"]}),
    ("/v1/chat/completions", lambda s: {"tools": [{"type": "function", "function": {"name": s}}],
                                        "tool_choice": "required"}),
    ("/v1/completions", lambda s: {"prompt": s}),
    ("/v1/completions", lambda s: {"prompt": [s, s]}),
    ("/v1/completions", lambda s: {"logit_bias": {s: 5}}),
    ("/v1/completions", lambda s: {"stop": s, "user": s, "request_id": s, "cache_salt": s}),
    ("/v1/completions", lambda s: {"suffix": s}),
    ("/tokenize", lambda s: {"prompt": s, "return_token_strs": True}),
    ("/tokenize", lambda s: {"prompt": None, "messages": [{"role": "user", "content": s}]}),
]


def test_odd_unicode(http, idle_after):
    text = st.sampled_from(ODD) | st.text(st.characters(codec=None, categories=("Cc", "Cf", "Cs", "Co", "Cn", "Mn",
                                                                                  "Zl", "Zp", "So")), max_size=40)

    @fuzz_settings(80)
    @given(st.sampled_from(range(len(PLACES))), text)
    def run(place, s):
        path, make = PLACES[place]
        body = _cap({**BASES[path], **make(s)}, path)
        # json.dumps writes lone surrogates as \\udXXX escapes, as a client library would
        send(http, path, json.dumps(body), what=f"{path} {json.dumps(make(s))[:300]}")

    run()
    for raw in (b'{"prompt": "\xff\xfe"}', b'{"prompt": "\xc3"}', b"\xef\xbb\xbf{}", b'{"prompt": "a\x00"}'):
        assert send(http, "/v1/completions", raw).status_code == 400


def test_lone_surrogates_are_a_400(http, idle_after):
    statuses = {}
    for i, (path, make) in enumerate(PLACES):
        for s in LONE_SURROGATES:
            body = _cap({**BASES[path], **make(s)}, path)
            response = http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            statuses[(i, path, s)] = response.status_code
    assert all(status == 400 for status in statuses.values()), {k: v for k, v in statuses.items() if v != 400}


OUT_OF_VOCAB = [-1, -(2**31), VOCAB, VOCAB + 1, 10**6, 2**31, 2**63, 10**30]
ID_PLACES: list[tuple[str, Callable[[int], dict[str, Any]]]] = [
    ("/v1/completions", lambda i: {"prompt": [1, i]}),
    ("/v1/completions", lambda i: {"prompt": [[1, 2], [i]]}),
    ("/v1/completions", lambda i: {"allowed_token_ids": [i]}),
    ("/v1/completions", lambda i: {"stop_token_ids": [i], "min_tokens": 1}),
    ("/v1/completions", lambda i: {"logit_bias": {str(i): 10}}),
    ("/v1/chat/completions", lambda i: {"allowed_token_ids": [2, i]}),
    ("/v1/chat/completions", lambda i: {"stop_token_ids": [i]}),
    ("/v1/chat/completions", lambda i: {"logit_bias": {str(i): -100}}),
    ("/detokenize", lambda i: {"tokens": [i]}),
]


def test_token_ids_outside_the_vocabulary(http, idle_after):
    @fuzz_settings(60)
    @given(st.sampled_from(range(len(ID_PLACES))), st.sampled_from(OUT_OF_VOCAB) | st.integers(max_value=-1)
           | st.integers(min_value=VOCAB))
    def run(place, token_id):
        path, make = ID_PLACES[place]
        response = send(http, path, json.dumps(_cap({**BASES[path], **make(token_id)}, path)))
        assert response.status_code == 400, f"{path} accepted token id {token_id}: {response.text[:300]}"
        param = response.json()["error"]["param"]
        assert param, f"{path} {token_id}: the error names no field: {response.text}"

    run()
