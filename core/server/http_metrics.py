"""HTTP request metrics under the names vLLM's server exposes (prometheus-fastapi-instrumentator's).

vLLM instruments its FastAPI app with prometheus-fastapi-instrumentator's default set:
``http_requests_total`` (counter by ``method``, ``status`` grouped as ``2xx``/``4xx``/... and
``handler``, the route's path template or ``none`` when no route matched),
``http_request_size_bytes`` and ``http_response_size_bytes`` (summaries of the Content-Length
headers by ``handler``), ``http_request_duration_highr_seconds`` (a histogram with many buckets and
no labels) and ``http_request_duration_seconds`` (a histogram by ``method`` and ``handler`` with
buckets 0.1, 0.5, 1). heron records the same series from one ASGI layer that sits inside the
API-key check (so, as with vLLM, rejected keys are not counted) and outside the router (so 404s and
405s are). The probes and ``/metrics`` itself are left out, as vLLM leaves them out.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary

__all__ = ("EXCLUDED_HANDLERS", "HIGHR_BUCKETS", "LOWR_BUCKETS", "HttpMetrics")

#: routes vLLM excludes from its HTTP metrics (probes, metadata, the scrape itself)
EXCLUDED_HANDLERS = frozenset({"/metrics", "/health", "/load", "/ping", "/version", "/server_info"})
#: prometheus-fastapi-instrumentator's default buckets
HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60)
LOWR_BUCKETS = (0.1, 0.5, 1)


class HttpMetrics:
    """The instrumentator's five metrics in ``registry``, and the ASGI layer that feeds them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.total = Counter("http_requests_total", "Total number of requests by method, status and handler.",
                             ("method", "status", "handler"), registry=r)
        self.request_size = Summary("http_request_size_bytes",
                                    "Content length of incoming requests by handler. Only value of header is "
                                    "respected. Otherwise ignored. No percentile calculated. ",
                                    ("handler",), registry=r)
        self.response_size = Summary("http_response_size_bytes",
                                     "Content length of outgoing responses by handler. Only value of header is "
                                     "respected. Otherwise ignored. No percentile calculated. ",
                                     ("handler",), registry=r)
        self.latency_highr = Histogram("http_request_duration_highr_seconds",
                                       "Latency with many buckets but no API specific labels. Made for more "
                                       "accurate percentile calculations. ", buckets=HIGHR_BUCKETS, registry=r)
        self.latency_lowr = Histogram("http_request_duration_seconds",
                                      "Latency with only few buckets by handler. Made to be only used if "
                                      "aggregation by handler is important. ",
                                      ("method", "handler"), buckets=LOWR_BUCKETS, registry=r)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` measured: one observation per HTTP request, when its last body part is sent
        (a stream's duration is the whole stream, as the instrumentator measures it)."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            seen: dict[str, Any] = {"status": 500, "length": 0, "end": None}

            async def tracking(message: Any) -> None:
                if message["type"] == "http.response.start":
                    seen["status"] = message["status"]
                    seen["length"] = _content_length(message.get("headers") or ())
                elif message["type"] == "http.response.body" and not message.get("more_body", False):
                    seen["end"] = time.perf_counter()
                await send(message)

            try:
                await app(scope, receive, tracking)
            finally:
                end = seen["end"] if seen["end"] is not None else time.perf_counter()
                self.record(scope, int(seen["status"]), max(end - start, 0.0), seen["length"])

        return measured

    def record(self, scope: Scope, status: int, duration: float, response_bytes: int) -> None:
        """Count one finished request (the router has put the matched route's template in ``scope``)."""
        handler = scope.get("path_template") or "none"  # type: ignore[attr-defined]
        if handler in EXCLUDED_HANDLERS:
            return
        method = scope.get("method", "GET")
        self.total.labels(method, f"{str(status)[0]}xx", handler).inc()
        self.request_size.labels(handler).observe(_content_length(scope.get("headers") or ()))
        self.response_size.labels(handler).observe(response_bytes)
        self.latency_highr.observe(duration)
        self.latency_lowr.labels(method, handler).observe(duration)


def _content_length(headers: Any) -> int:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
