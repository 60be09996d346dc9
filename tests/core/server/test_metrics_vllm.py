"""``/metrics`` carries vLLM's metric names, types, labels and buckets (``--metrics-prefix``), the
HTTP request metrics vLLM's server exposes, ``--metrics-no-auth``, and the example Grafana
dashboard only queries series that a real scrape has, with the right type."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from heron.server import ServerSettings, add_serve_arguments, build_app, settings_from_args

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
DASHBOARD = Path(__file__).resolve().parents[3] / "examples" / "grafana" / "heron-dashboard.json"

# vLLM's lists (vllm/v1/metrics/loggers.py, PrometheusStatLogger; prometheus-fastapi-instrumentator)
VLLM_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
             40.0, 80.0, 160.0, 640.0, 2560.0]
VLLM_ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
VLLM_REQUEST_LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                        240.0, 480.0, 960.0, 1920.0, 7680.0]
BUCKETS = {
    "time_to_first_token_seconds": VLLM_TTFT,
    "inter_token_latency_seconds": VLLM_ITL,
    "time_per_output_token_seconds": VLLM_ITL,
    "request_time_per_output_token_seconds": VLLM_ITL,
    **{name: VLLM_REQUEST_LATENCY for name in ("e2e_request_latency_seconds", "request_queue_time_seconds",
                                               "request_inference_time_seconds", "request_prefill_time_seconds",
                                               "request_decode_time_seconds")},
    "request_params_n": [1, 2, 5, 10, 20],
    # build_1_2_5_buckets(max_model_len=2048)
    **{name: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
       for name in ("request_prompt_tokens", "request_generation_tokens", "request_max_num_generation_tokens",
                    "request_params_max_tokens")},
}
HTTP_BUCKETS = {"http_request_duration_seconds": [0.1, 0.5, 1.0],
                "http_request_duration_highr_seconds": [0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2,
                                                        2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60]}
# every vLLM family heron measures, with vLLM's type (the family name, as TYPE lines show it)
VLLM_FAMILIES = {
    "num_requests_running": "gauge", "num_requests_waiting": "gauge", "kv_cache_usage_perc": "gauge",
    "gpu_cache_usage_perc": "gauge", "engine_sleep_state": "gauge",
    "prompt_tokens": "counter", "generation_tokens": "counter", "request_success": "counter",
    "num_preemptions": "counter", "prefix_cache_queries": "counter", "prefix_cache_hits": "counter",
    **{name: "histogram" for name in BUCKETS},
}
# the series vLLM's own example dashboard (examples/online_serving/prometheus_grafana/grafana.json) reads
VLLM_EXAMPLE_DASHBOARD = [
    "vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:time_per_output_token_seconds_bucket", "vllm:time_per_output_token_seconds_sum",
    "vllm:time_per_output_token_seconds_count", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count", "vllm:gpu_cache_usage_perc", "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket", "vllm:request_success_total", "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum", "vllm:request_decode_time_seconds_sum",
    "vllm:request_max_num_generation_tokens_sum",
]


def scrape(client, **headers) -> tuple[dict[str, str], dict[str, list]]:
    """``/metrics`` as ({sample name: its family's type}, {sample name: [samples]}), ``_created`` left out."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    types: dict[str, str] = {}
    samples: dict[str, list] = {}
    for fam in text_string_to_metric_families(response.text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            types[s.name] = fam.type
            samples.setdefault(s.name, []).append(s)
    return types, samples


def buckets(samples: dict[str, list], name: str) -> list[float]:
    bounds = sorted({float(s.labels["le"]) for s in samples[f"{name}_bucket"]})
    assert bounds[-1] == float("inf"), name
    return bounds[:-1]


def traffic(client) -> None:
    assert client.post(COMPLETIONS, json={"prompt": "Say hi", "n": 2, "max_tokens": 50}).status_code == 200
    assert client.post(COMPLETIONS, json={"prompt": "Say hi", "max_tokens": 3}).status_code == 200
    assert client.get("/v1/models").status_code == 200


# -- prefixes, names, types, labels, buckets ------------------------------------------------------


def test_default_prefix_is_heron_only(make_client):
    client = make_client()
    traffic(client)
    text = client.get("/metrics").text
    assert "heron:prompt_tokens_total" in text and "heron:inter_token_latency_seconds_bucket" in text
    assert "vllm:" not in text
    assert 'http_requests_total{handler="/v1/completions",method="POST",status="2xx"} 2.0' in text


def test_vllm_prefix_has_vllms_names_types_and_labels(make_client):
    client = make_client(metrics_prefix=["vllm"])
    traffic(client)
    response = client.get("/metrics")
    assert "heron:" not in response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name, kind in VLLM_FAMILIES.items():
        fam = families.get(f"vllm:{name}")
        assert fam is not None and fam.type == kind, (name, fam and fam.type)
        assert fam.samples and all(s.labels["model_name"] == "SmolLM2-135M-Instruct" and s.labels["engine"] == "0"
                                   for s in fam.samples), name
    _, samples = scrape(client)
    assert "vllm:prompt_tokens_total" in samples and "vllm:e2e_request_latency_seconds_bucket" in samples
    reasons = {s.labels["finished_reason"]: s.value for s in samples["vllm:request_success_total"]}
    assert {"stop", "length", "abort", "error"} <= set(reasons) and reasons["length"] >= 1
    sleep = {s.labels["sleep_state"]: s.value for s in samples["vllm:engine_sleep_state"]}
    assert sleep == {"awake": 1.0, "weights_offloaded": 0.0, "discard_all": 0.0}


def test_buckets_are_vllms(make_client):
    client = make_client(metrics_prefix=["vllm"])
    traffic(client)
    _, samples = scrape(client)
    for name, expected in BUCKETS.items():
        assert buckets(samples, f"vllm:{name}") == expected, name
    for name, expected in HTTP_BUCKETS.items():
        assert buckets(samples, name) == expected, name


def test_both_prefixes_carry_the_same_values(make_client):
    client = make_client(metrics_prefix=["heron", "vllm"])
    traffic(client)
    _, samples = scrape(client)
    heron = {n: s for n, s in samples.items() if n.startswith("heron:")}
    assert len(heron) > 40

    def without_engine(series: list) -> list:
        return sorted((tuple(sorted((k, v) for k, v in s.labels.items() if k != "engine")), s.value) for s in series)

    for name, series in heron.items():
        assert without_engine(samples["vllm:" + name[len("heron:"):]]) == without_engine(series), name


def test_request_observations(make_client):
    client = make_client(metrics_prefix=["vllm"])
    usage = client.post(COMPLETIONS, json={"prompt": "Say hi", "n": 2, "max_tokens": 50}).json()["usage"]
    _, s = scrape(client)
    value = lambda name: sum(x.value for x in s[name])  # noqa: E731
    assert value("vllm:request_params_n_count") == 1 and value("vllm:request_params_n_sum") == 2
    assert value("vllm:request_params_max_tokens_count") == 2 and value("vllm:request_params_max_tokens_sum") == 100
    assert value("vllm:request_prompt_tokens_count") == 1
    assert value("vllm:request_prompt_tokens_sum") == value("vllm:prompt_tokens_total") == usage["prompt_tokens"]
    assert value("vllm:request_generation_tokens_count") == 2
    assert value("vllm:request_generation_tokens_sum") == value("vllm:generation_tokens_total") \
        == usage["completion_tokens"]
    assert value("vllm:request_max_num_generation_tokens_count") == 1  # one per request: its longest choice
    assert value("vllm:request_max_num_generation_tokens_sum") == usage["completion_tokens"] / 2
    for phase in ("prefill", "decode", "inference"):
        assert value(f"vllm:request_{phase}_time_seconds_count") == 2, phase
    assert value("vllm:request_queue_time_seconds_count") == 0  # the scripted engine reports no engine timings
    assert value("vllm:time_per_output_token_seconds_count") == value("vllm:inter_token_latency_seconds_count") > 0
    assert value("vllm:time_to_first_token_seconds_count") == value("vllm:e2e_request_latency_seconds_count") == 2


def test_unknown_prefix_is_refused():
    with pytest.raises(ValueError, match="heron, vllm or heron,vllm"):
        build_app(ServerSettings(metrics_prefix=["prom"]), None)


def test_flags_reach_the_settings():
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--metrics-prefix", "heron,vllm", "--metrics-no-auth"]), {})
    assert settings.metrics_prefix == ["heron", "vllm"] and settings.metrics_no_auth is True
    default = settings_from_args(parser.parse_args([]), {})
    assert default.metrics_prefix == ["heron"] and default.metrics_no_auth is False


# -- HTTP metrics, auth ---------------------------------------------------------------------------


def test_http_request_metrics(make_client):
    client = make_client(api_key=["k"])
    key = {"Authorization": "Bearer k"}
    body = json.dumps({"prompt": "Say hi", "max_tokens": 3})
    sent = client.post(COMPLETIONS, content=body, headers={**key, "content-type": "application/json"})
    assert sent.status_code == 200
    assert client.get("/v1/models", headers=key).status_code == 200
    assert client.get("/v1/responses/resp_nope", headers=key).status_code == 404
    assert client.get("/no/such/route", headers=key).status_code == 404
    assert client.get("/v1/models").status_code == 401  # rejected keys are not counted (as vLLM)
    assert client.get("/health").status_code == 200  # probes are excluded
    client.get("/metrics", headers=key)
    types, s = scrape(client, **key)
    total = {(x.labels["handler"], x.labels["method"], x.labels["status"]): x.value for x in s["http_requests_total"]}
    assert total == {("/v1/completions", "POST", "2xx"): 1, ("/v1/models", "GET", "2xx"): 1,
                     ("/v1/responses/{response_id}", "GET", "4xx"): 1, ("none", "GET", "4xx"): 1}
    assert types["http_requests_total"] == "counter" and types["http_request_duration_seconds_bucket"] == "histogram"
    assert types["http_request_size_bytes_sum"] == "summary"
    sizes = {x.labels["handler"]: x.value for x in s["http_request_size_bytes_sum"]}
    assert sizes["/v1/completions"] == len(body)
    durations = {(x.labels["handler"], x.labels["method"]): x.value for x in s["http_request_duration_seconds_count"]}
    assert durations[("/v1/completions", "POST")] == 1
    assert sum(x.value for x in s["http_request_duration_highr_seconds_count"]) == 4


def test_metrics_need_the_key_unless_metrics_no_auth(make_client):
    guarded = make_client(api_key=["k"])
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
    open_metrics = make_client(api_key=["k"], metrics_no_auth=True)
    assert open_metrics.get("/metrics").status_code == 200
    assert open_metrics.get("/v1/models").status_code == 401  # only /metrics opens
    assert open_metrics.post(CHAT, json={"messages": MSG}).status_code == 401
    assert open_metrics.post(COMPLETIONS, json={"prompt": "hi"}).status_code == 401


# -- the example dashboard ------------------------------------------------------------------------

_NAME = r"[A-Za-z_:][A-Za-z0-9_:]*"
_SELECTOR = re.compile(rf"({_NAME})\{{([^}}]*)\}}")
_RATE_ARG = re.compile(rf"\b(?:rate|increase|irate)\(\s*({_NAME})\{{")
_MATCHER = re.compile(rf"({_NAME})\s*(?:=~|!~|!=|=)\s*\"")


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(re.sub(rf"^label_values\(({_NAME}),\s*({_NAME})\)$", r'\1{\2!=""}', query["query"]))
    return exprs


def _leftover_identifiers(expr: str) -> list[str]:
    """Identifiers that are neither a selector's metric, a function, nor a by() label: bare metrics."""
    rest = _SELECTOR.sub(" ", expr)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", rest)
    return [m.group(1) for m in re.finditer(rf"({_NAME})(\s*\()?", rest) if not m.group(2)]


def _check_series(name: str, kind: str | None, in_rate: bool) -> str | None:
    """Why ``name`` (as a query reads it) does not fit its type in the scrape, or None."""
    if kind is None:
        return "not in /metrics"
    if name.endswith("_bucket"):
        return None if kind == "histogram" and in_rate else "a _bucket must be a histogram's, inside rate()"
    if name.endswith(("_sum", "_count")) and kind in ("histogram", "summary"):
        return None if in_rate else "a histogram's _sum/_count only inside rate()/increase()"
    if kind == "counter":
        return None if in_rate and name.endswith("_total") else "a counter must end in _total, inside rate()"
    return None if kind == "gauge" and not in_rate else f"a {kind} read as a gauge, or a gauge inside rate()"


def test_dashboard_queries_use_series_that_metrics_exposes(make_client):
    dashboard = json.loads(DASHBOARD.read_text())
    client = make_client(metrics_prefix=["vllm"])
    traffic(client)
    client.get("/no/such/route")
    types, samples = scrape(client)
    exprs = _queries(dashboard)
    assert len(exprs) >= 25
    seen: set[str] = set()
    for expr in exprs:
        assert not _leftover_identifiers(expr), (expr, _leftover_identifiers(expr))
        wrapped = set(_RATE_ARG.findall(expr))
        if "histogram_quantile" in expr:
            assert re.search(r"sum by\s*\([^)]*\ble\b", expr), expr
            assert all(n.endswith("_bucket") for n in wrapped), expr
        for name, matchers in _SELECTOR.findall(expr):
            seen.add(name)
            assert name.startswith(("vllm:", "http_")), name
            problem = _check_series(name, types.get(name), name in wrapped)
            assert problem is None, (name, problem, expr)
            keys = set(_MATCHER.findall(matchers))
            assert any(keys <= set(s.labels) for s in samples[name]), (name, keys)
    # the panels the dashboard promises
    for name in ("vllm:e2e_request_latency_seconds_bucket", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
                 "vllm:request_success_total", "http_requests_total", "http_request_duration_seconds_bucket"):
        assert name in seen, name


def test_vllm_example_dashboard_series_exist(make_client):
    client = make_client(metrics_prefix=["vllm"])
    traffic(client)
    types, _ = scrape(client)
    for name in VLLM_EXAMPLE_DASHBOARD:
        in_rate = not (types.get(name) == "gauge")
        assert _check_series(name, types.get(name), in_rate) is None, name


def test_checker_catches_wrong_types(make_client):
    """The dashboard check itself: a gauge in rate(), a counter without _total, a missing name fail."""
    client = make_client(metrics_prefix=["vllm"])
    traffic(client)
    types, _ = scrape(client)
    assert _check_series("vllm:num_requests_running", types["vllm:num_requests_running"], True)
    assert _check_series("vllm:prompt_tokens", types.get("vllm:prompt_tokens"), True)
    assert _check_series("vllm:prompt_tokens_total", types["vllm:prompt_tokens_total"], False)
    assert _check_series("vllm:num_requests_running_bucket", types.get("vllm:num_requests_running_bucket"), True)
    assert _leftover_identifiers('rate(vllm:prompt_tokens_total{model_name="m"}[5m]) / vllm:x') == ["vllm:x"]
