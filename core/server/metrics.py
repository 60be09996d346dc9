"""Prometheus metrics with vLLM's names under the ``heron:`` prefix.

Gauges and engine-side counters are read from the engine's stats at scrape time (a custom
collector), so the engine loop pays nothing for them; per-request histograms and token
counters are observed by the server as requests finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ("ServerMetrics",)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
_ITL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)


class _EngineCollector:
    def __init__(self, stats: Callable[[], dict[str, Any]], model_name: str) -> None:
        self._stats, self._model = stats, model_name

    def collect(self):
        s = self._stats()
        labels = ["model_name"]
        for name, doc, key in (
            ("heron:num_requests_running", "Requests in model execution batches.", "num_running"),
            ("heron:num_requests_waiting", "Requests waiting to be processed.", "num_waiting"),
            ("heron:kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.", "kv_cache_usage"),
        ):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([self._model], float(s.get(key, 0)))
            yield g
        for name, doc, key in (
            ("heron:num_preemptions", "Cumulative number of preemptions.", "num_preemptions"),
            ("heron:prefix_cache_queries", "Prefix-cache queries, in tokens.", "prefix_cache_queries"),
            ("heron:prefix_cache_hits", "Prefix-cache hits, in tokens.", "prefix_cache_hits"),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric([self._model], float(s.get(key, 0)))
            yield c
        lora = s.get("lora")
        if lora is not None:  # vLLM's info gauge: the labels carry the data, the value is the scrape time
            g = GaugeMetricFamily("heron:lora_requests_info", "Running stats on LoRA requests.",
                                  labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"])
            g.add_metric([str(lora.get("max_lora", 0)), ",".join(lora.get("running", ())),
                          ",".join(lora.get("waiting", ()))], time.time())
            yield g


class ServerMetrics:
    """One registry per app (tests start several apps in one process)."""

    def __init__(self, model_name: str, engine_stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]
        r = self.registry
        self.prompt_tokens = Counter("heron:prompt_tokens", "Prefill tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("heron:generation_tokens", "Generation tokens processed.", labels, registry=r)
        self.request_success = Counter(
            "heron:request_success", "Finished requests by finish reason.", [*labels, "finished_reason"], registry=r
        )
        self.ttft = Histogram("heron:time_to_first_token_seconds", "Time to first token.", labels,
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("heron:inter_token_latency_seconds", "Inter-token latency.", labels,
                             buckets=_ITL_BUCKETS, registry=r)
        self.e2e = Histogram("heron:e2e_request_latency_seconds", "End-to-end request latency.", labels,
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("heron:request_queue_time_seconds", "Time spent waiting before running.",
                                    labels, buckets=_LATENCY_BUCKETS, registry=r)
        r.register(_EngineCollector(engine_stats, model_name))
        for reason in ("stop", "length", "abort", "tool_calls"):
            self.request_success.labels(model_name, reason)

    def observe_finished(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str,
        ttft: float | None,
        e2e: float,
        queue_time: float | None,
        itls: list[float] | None = None,
    ) -> None:
        m = self.model_name
        self.prompt_tokens.labels(m).inc(prompt_tokens)
        self.generation_tokens.labels(m).inc(completion_tokens)
        self.request_success.labels(m, finish_reason).inc()
        if ttft is not None:
            self.ttft.labels(m).observe(ttft)
        self.e2e.labels(m).observe(e2e)
        if queue_time is not None:
            self.queue_time.labels(m).observe(queue_time)
        for gap in itls or ():
            self.itl.labels(m).observe(gap)

    def observe_aborted(self, *, e2e: float) -> None:
        """A request that ended before finishing: client disconnect, timeout or error mid-generation."""
        m = self.model_name
        self.request_success.labels(m, "abort").inc()
        self.e2e.labels(m).observe(e2e)

    def render(self) -> bytes:
        return generate_latest(self.registry)
