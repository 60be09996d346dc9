"""Prometheus metrics with vLLM's names, types and buckets, under ``heron:``, ``vllm:`` or both.

One set of instruments is kept under ``heron:`` names and rendered under every prefix that
``--metrics-prefix`` names, so a scrape with ``heron,vllm`` carries each series twice. Under
``vllm:`` the series also carry vLLM's ``engine="0"`` label, so vLLM's Grafana dashboards and
alerts work unchanged. Gauges and engine-side counters are read from the engine's stats at scrape
time (a custom collector), so the engine loop pays nothing for them; with data-parallel replicas
they are given per replica and summed (see :class:`_EngineCollector`). Per-request histograms and
token counters are observed by the server as requests finish. Speculative decoding's counters
(``spec_decode_num_drafts``, ``..._num_draft_tokens``, ``..._num_accepted_tokens`` and
``..._num_accepted_tokens_per_pos`` by ``position``) appear when the engine speculates, as in vLLM.
vLLM's metrics that need measurements heron does not make (per-step token counts, KV-connector
transfers, multi-modal caches) are absent rather than always zero. HTTP request metrics come
from :mod:`heron.server.http_metrics`; the process and Python runtime collectors are included as
in vLLM's default registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from heron.server.http_metrics import HttpMetrics

__all__ = ("E2E_BUCKETS", "ITL_BUCKETS", "METRIC_PREFIXES", "TTFT_BUCKETS", "ServerMetrics", "build_1_2_5_buckets")

#: the values ``--metrics-prefix`` takes
METRIC_PREFIXES = ("heron", "vllm")
# vLLM's buckets (vllm/v1/metrics/loggers.py, PrometheusStatLogger)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
_N_BUCKETS = (1, 2, 5, 10, 20)
_FINISH_REASONS = ("stop", "length", "abort", "error")  # vLLM's FinishReason, all shown from the start
_OPEN_GROUPS = 1024  # requests with n > 1 whose choices are still finishing (aborted ones fall out)


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value`` (vLLM's token-count buckets)."""
    out, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return out
            out.append(m * scale)
        scale *= 10


def _check_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip().rstrip(":") for p in prefixes if p.strip()))
    bad = [p for p in names if p not in METRIC_PREFIXES]
    if bad or not names:
        raise ValueError(f"--metrics-prefix takes heron, vllm or heron,vllm; got {','.join(prefixes) or 'nothing'}.")
    return names


_GAUGES = (  # (name, help, stats key)
    ("num_requests_running", "Number of requests in model execution batches.", "num_running"),
    ("num_requests_waiting", "Number of requests waiting to be processed.", "num_waiting"),
    ("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "kv_cache_usage"),
    # vLLM's older name, still read by its example dashboard
    ("gpu_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use kv_cache_usage_perc instead.",
     "kv_cache_usage"),
)
_COUNTERS = (
    ("num_preemptions", "Cumulative number of preemption from the engine.", "num_preemptions"),
    ("prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", "prefix_cache_queries"),
    ("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", "prefix_cache_hits"),
)
#: per data-parallel replica only (heron:replica_*): what the front-end's own counters cannot split
_REPLICA_COUNTERS = (
    ("requests", "Requests routed to this data-parallel replica.", "num_requests"),
    ("prompt_tokens", "Prompt tokens this data-parallel replica processed.", "num_prompt_tokens"),
    ("generation_tokens", "Tokens this data-parallel replica generated.", "num_generated_tokens"),
)
_SLEEP_DOC = ("Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
              "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.")


def _engine_families(name: str, model: str, rows: list[tuple[str | None, dict[str, Any]]],
                     counters: tuple[tuple[str, str, str], ...] = _COUNTERS) -> Iterator[Metric]:
    """Gauges and counters named ``name + ...``, one series per ``(engine label or None, stats)`` row."""
    labels = ["model_name", *(["engine"] if rows[0][0] is not None else [])]

    def values(engine: str | None) -> list[str]:
        return [model, *([engine] if engine is not None else [])]

    for family, specs in ((GaugeMetricFamily, _GAUGES), (CounterMetricFamily, counters)):
        for metric, doc, key in specs:
            fam = family(name + metric, doc, labels=labels)
            for engine, s in rows:
                fam.add_metric(values(engine), float(s.get(key, 0)))
            yield fam
    g = GaugeMetricFamily(f"{name}engine_sleep_state", _SLEEP_DOC, labels=[*labels, "sleep_state"])
    for engine, s in rows:
        level = int(s.get("sleep_level", 0))  # 0 awake, 1 weights offloaded, 2 everything discarded
        for state, on in (("awake", level == 0), ("weights_offloaded", level == 1), ("discard_all", level == 2)):
            g.add_metric([*values(engine), state], float(on))
    yield g


_SPEC_COUNTERS = (  # vLLM's speculative-decoding counters (vllm/v1/spec_decode/metrics.py)
    ("spec_decode_num_drafts", "Number of spec decoding drafts."),
    ("spec_decode_num_draft_tokens", "Number of draft tokens."),
    ("spec_decode_num_accepted_tokens", "Number of accepted tokens."),
)
_SPEC_PER_POS = "spec_decode_num_accepted_tokens_per_pos"


def _spec_families(name: str, model: str, rows: list[tuple[str | None, dict[str, Any]]]) -> Iterator[Metric]:
    """Speculative decoding's counters, one series per row (and per draft position)."""
    labels = ["model_name", *(["engine"] if rows[0][0] is not None else [])]

    def values(engine: str | None) -> list[str]:
        return [model, *([engine] if engine is not None else [])]

    for key, doc in _SPEC_COUNTERS:
        fam = CounterMetricFamily(name + key, doc, labels=labels)
        for engine, s in rows:
            fam.add_metric(values(engine), float(s.get(key, 0)))
        yield fam
    fam = CounterMetricFamily(name + _SPEC_PER_POS, "Accepted draft tokens per draft position.",
                              labels=[*labels, "position"])
    for engine, s in rows:
        for pos, count in enumerate(s.get(_SPEC_PER_POS, ())):
            fam.add_metric([*values(engine), str(pos)], float(count))
    yield fam


def _spec_total(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    """The replicas' speculative-decoding counters summed (per position too)."""
    per_pos: list[int] = []
    for r in replicas:
        for pos, count in enumerate(r.get(_SPEC_PER_POS, ())):
            per_pos += [0] * (pos + 1 - len(per_pos))
            per_pos[pos] += count
    return {**{key: sum(r.get(key, 0) for r in replicas) for key, _ in _SPEC_COUNTERS}, _SPEC_PER_POS: per_pos}


class _EngineCollector:
    """Scheduler gauges and engine counters, read from ``stats()`` at scrape time (once per scrape).

    With one engine, ``heron:`` series carry ``model_name`` and ``vllm:`` ones also ``engine="0"``.
    With data-parallel replicas (``stats()["replicas"]``), ``vllm:`` carries one series per replica,
    ``engine="<index>"`` (vLLM's own scheme for DP ranks: ``sum()`` gives the total), while
    ``heron:`` keeps the summed series under the same names and labels as with one engine (so
    queries and alerts do not change with ``-dp``) and adds ``heron:replica_*`` families with an
    ``engine`` label: the same gauges and counters per replica, plus the requests routed to it and
    the tokens it processed. Summed and per-replica series never share a family, so a ``sum()``
    over a family counts each request once.
    """

    def __init__(self, stats: Callable[[], dict[str, Any]], model_name: str) -> None:
        self.stats, self._model = stats, model_name

    def collect(self, prefix: str, s: dict[str, Any]) -> Iterator[Metric]:
        replicas = s.get("replicas") or None
        rows: list[tuple[str | None, dict[str, Any]]] = [(str(i), r) for i, r in enumerate(replicas or ())]
        if prefix == "vllm":
            yield from _engine_families("vllm:", self._model, rows or [("0", s)])
            if _SPEC_COUNTERS[0][0] in s:
                yield from _spec_families("vllm:", self._model, rows or [("0", s)])
        else:
            yield from _engine_families(f"{prefix}:", self._model, [(None, s)])
            if _SPEC_COUNTERS[0][0] in s:
                yield from _spec_families(f"{prefix}:", self._model, [(None, _spec_total([r for _, r in rows]) if rows
                                                                               else s)])
            if rows:
                yield from _engine_families(f"{prefix}:replica_", self._model, rows, _COUNTERS + _REPLICA_COUNTERS)
        lora = s.get("lora")
        if lora is not None:  # vLLM's info gauge: the labels carry the data, the value is the scrape time
            g = GaugeMetricFamily(f"{prefix}:lora_requests_info", "Running stats on lora requests.",
                                  labels=["max_lora", "waiting_lora_adapters", "running_lora_adapters"])
            g.add_metric([str(lora.get("max_lora", 0)), ",".join(lora.get("waiting", ())),
                          ",".join(lora.get("running", ()))], time.time())
            yield g


class _Prefixed:
    """Every family of ``inner`` (named ``heron:...``) once per prefix (``vllm:`` adds ``engine="0"``),
    then the engine's families for that prefix, from one ``stats()`` call."""

    def __init__(self, inner: CollectorRegistry, prefixes: tuple[str, ...], engine: _EngineCollector) -> None:
        self._inner, self._prefixes, self._engine = inner, prefixes, engine

    def collect(self) -> Iterator[Metric]:
        families, stats = list(self._inner.collect()), self._engine.stats()
        for prefix in self._prefixes:
            for fam in families:
                yield _renamed(fam, prefix)
            yield from self._engine.collect(prefix, stats)


def _renamed(fam: Metric, prefix: str) -> Metric:
    if prefix == "heron":
        return fam
    out = Metric(prefix + fam.name[len("heron"):], fam.documentation, fam.type, fam.unit)
    for s in fam.samples:
        labels = s.labels
        if "model_name" in labels:  # vLLM's order: model_name, engine, then the rest (finished_reason, le)
            labels = {"model_name": labels["model_name"], "engine": "0",
                      **{k: v for k, v in labels.items() if k != "model_name"}}
        out.samples.append(s._replace(name=prefix + s.name[len("heron"):], labels=labels))
    return out


class _TokenHistograms:
    """vLLM's token-count histograms, whose 1-2-5 buckets end at the model's context length."""

    def __init__(self, registry: CollectorRegistry, max_model_len: int, model_name: str) -> None:
        buckets, labels, r = build_1_2_5_buckets(max_model_len), ["model_name"], registry
        self.prompt = Histogram("heron:request_prompt_tokens", "Number of prefill tokens processed.", labels,
                                buckets=buckets, registry=r)
        self.generation = Histogram("heron:request_generation_tokens", "Number of generation tokens processed.",
                                    labels, buckets=buckets, registry=r)
        self.max_generation = Histogram("heron:request_max_num_generation_tokens",
                                        "Histogram of maximum number of requested generation tokens.", labels,
                                        buckets=buckets, registry=r)
        self.max_tokens = Histogram("heron:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
                                    labels, buckets=buckets, registry=r)
        for made in (self.prompt, self.generation, self.max_generation, self.max_tokens):
            made.labels(model_name)


class ServerMetrics:
    """One registry per app (tests start several apps in one process).

    Args:
        model_name: the ``model_name`` label (the first served name).
        engine_stats: returns the engine's stats (``num_running``, ``kv_cache_usage``, ...).
        prefixes: ``--metrics-prefix``: ``heron``, ``vllm`` or both.
        max_model_len: the context length (or a callable returning it, None while loading): the
            token-count histograms appear once it is known.
    """

    def __init__(self, model_name: str, engine_stats: Callable[[], dict[str, Any]], *,
                 prefixes: Iterable[str] = ("heron",), max_model_len: int | Callable[[], int | None] | None = None,
                 ) -> None:
        self.prefixes = _check_prefixes(prefixes)
        self.model_name = model_name
        self._max_len = max_model_len if callable(max_model_len) else (lambda: max_model_len)
        self._tokens: _TokenHistograms | None = None
        self._groups: dict[int, list[Any]] = {}  # id(params) -> [params, choices left, most tokens]
        self.registry = CollectorRegistry()
        self._inner = r = CollectorRegistry()
        self.registry.register(_Prefixed(r, self.prefixes, _EngineCollector(engine_stats, model_name)))
        for runtime in (ProcessCollector, PlatformCollector, GCCollector):
            runtime(registry=self.registry)
        self.http = HttpMetrics(self.registry)
        labels = ["model_name"]
        self.prompt_tokens = Counter("heron:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("heron:generation_tokens", "Number of generation tokens processed.",
                                         labels, registry=r)
        self.request_success = Counter("heron:request_success", "Count of successfully processed requests.",
                                       [*labels, "finished_reason"], registry=r)
        self.prompt_tokens.labels(model_name), self.generation_tokens.labels(model_name)
        for reason in _FINISH_REASONS:
            self.request_success.labels(model_name, reason)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            made = Histogram(f"heron:{name}", doc, labels, buckets=buckets, registry=r)
            made.labels(model_name)  # every series from the start, zero until observed (as vLLM)
            return made

        self.ttft = hist("time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = hist("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.tpot = hist("time_per_output_token_seconds", "Histogram of time per output token in seconds. "
                         "DEPRECATED: Use inter_token_latency_seconds instead.", ITL_BUCKETS)
        self.request_tpot = hist("request_time_per_output_token_seconds",
                                 "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS)
        self.e2e = hist("e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", E2E_BUCKETS)
        self.queue_time = hist("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                               E2E_BUCKETS)
        self.inference_time = hist("request_inference_time_seconds",
                                   "Histogram of time spent in RUNNING phase for request.", E2E_BUCKETS)
        self.prefill_time = hist("request_prefill_time_seconds",
                                 "Histogram of time spent in PREFILL phase for request.", E2E_BUCKETS)
        self.decode_time = hist("request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
                                E2E_BUCKETS)
        self.params_n = hist("request_params_n", "Histogram of the n request parameter.", _N_BUCKETS)

    def _token_histograms(self) -> _TokenHistograms | None:
        if self._tokens is None and (length := self._max_len()):
            self._tokens = _TokenHistograms(self._inner, int(length), self.model_name)
        return self._tokens

    def observe_finished(self, *, prompt_tokens: int, completion_tokens: int, finish_reason: str, ttft: float | None,
                         e2e: float, queue_time: float | None, itls: list[float] | None = None,
                         params: Any = None) -> None:
        """One choice finished: ``prompt_tokens`` is the prompt's length on one choice per prompt (0 on
        its siblings); ``params`` are the request's sampling parameters (``max_tokens``, ``n``)."""
        m = self.model_name
        self.prompt_tokens.labels(m).inc(prompt_tokens)
        self.generation_tokens.labels(m).inc(completion_tokens)
        self.request_success.labels(m, finish_reason).inc()
        if ttft is not None:
            self.ttft.labels(m).observe(ttft)
        for gap in itls or ():
            self.itl.labels(m).observe(gap)
            self.tpot.labels(m).observe(gap)
        self.e2e.labels(m).observe(e2e)
        if queue_time is not None:
            self.queue_time.labels(m).observe(queue_time)
        # vLLM's phases: prefill ends at the first token, decode at the last; running = both
        prefill = max(ttft - (queue_time or 0.0), 0.0) if ttft is not None else 0.0
        decode = max(e2e - ttft, 0.0) if ttft is not None else 0.0
        self.prefill_time.labels(m).observe(prefill)
        self.decode_time.labels(m).observe(decode)
        self.inference_time.labels(m).observe(prefill + decode)
        self.request_tpot.labels(m).observe(decode / (completion_tokens - 1) if completion_tokens > 1 else 0.0)
        self._observe_tokens(prompt_tokens, completion_tokens, params)

    def _observe_tokens(self, prompt_tokens: int, completion_tokens: int, params: Any) -> None:
        tok, m = self._token_histograms(), self.model_name
        max_tokens, n = getattr(params, "max_tokens", None), int(getattr(params, "n", 1) or 1)
        if tok is not None:
            if prompt_tokens:
                tok.prompt.labels(m).observe(prompt_tokens)
            tok.generation.labels(m).observe(completion_tokens)
            if max_tokens:
                tok.max_tokens.labels(m).observe(max_tokens)
        group = self._groups.get(id(params)) if n > 1 else None
        if group is None or group[0] is not params:  # the request's first finished choice
            self.params_n.labels(m).observe(n)
            group = [params, n, 0]
            if n > 1:
                self._groups[id(params)] = group
                while len(self._groups) > _OPEN_GROUPS:
                    self._groups.pop(next(iter(self._groups)))
        group[1], group[2] = group[1] - 1, max(group[2], completion_tokens)
        if group[1] <= 0:  # all n choices done: the longest one, as vLLM's parent request reports
            self._groups.pop(id(params), None)
            if tok is not None:
                tok.max_generation.labels(m).observe(group[2])

    def observe_aborted(self, *, e2e: float) -> None:
        """A request that ended before finishing: client disconnect, timeout or error mid-generation."""
        m = self.model_name
        self.request_success.labels(m, "abort").inc()
        self.e2e.labels(m).observe(e2e)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        self._token_histograms()
        return generate_latest(self.registry)
