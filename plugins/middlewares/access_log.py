"""``access_log``: one line per request with status, latency and token counts.

With ``--log-requests`` (vLLM's ``--enable-log-requests``; it also turns this middleware on) it
logs, as vLLM's request logger does, each generation request's prompt and parameters when its
body has arrived, and the generated text when the answer is complete (streamed or not), each cut
to ``--max-log-len`` characters. Bodies are read as the route reads them, never ahead of it.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Any

from heron_plugins.middlewares.payload_log import OutputCollector, params_of, prompt_of, shorten

__all__ = ("access_log_middleware",)

logger = logging.getLogger("heron.access")
_numbers = itertools.count(1)  # names requests in the log when no request_id middleware did


class _Payloads:
    """Taps one request's body and answer for the prompt and output log lines."""

    def __init__(self, scope: dict[str, Any], max_len: int | None, max_body: int) -> None:
        self.scope, self.max_len, self.max_body = scope, max_len, max_body
        self.body = bytearray()
        self.output = OutputCollector(max_len)
        self.name = ""

    def request_chunk(self, message: dict[str, Any]) -> None:
        if message.get("type") != "http.request" or len(self.body) > self.max_body:
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False) or len(self.body) > self.max_body:
            return
        try:  # the log never fails a request: a hostile body (say, nested 100,000 deep) is just not shown
            body = json.loads(bytes(self.body))
            prompt = prompt_of(body)
            params = params_of(body) if prompt is not None else ""
        except (ValueError, RecursionError, TypeError):
            return
        if prompt is None:
            return
        state = self.scope.get("state", {})
        self.name = state.get("request_id") or f"#{next(_numbers)}"
        logger.info("Received request %s: %s %s prompt: %s, params: %s", self.name, self.scope.get("method"),
                    self.scope.get("path"), shorten(prompt, self.max_len), params)
        self.body = bytearray()

    def response_message(self, message: dict[str, Any]) -> None:
        if not self.name:  # no prompt was logged: nothing to pair the output with
            return
        if message["type"] == "http.response.start":
            self.output.start(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.output.feed(message.get("body", b""))

    def finish(self, status: int) -> None:
        if not self.name:  # not a generation request
            return
        outputs = self.output.outputs()
        if outputs:
            shown = outputs[0] if len(outputs) == 1 else "[" + ", ".join(outputs) + "]"
            logger.info("Generated response %s: status %s output: %s", self.name, status, shown)


def access_log_middleware(settings: Any):
    """Factory: token counts come from ``scope["state"]["usage"]`` when a handler set them."""
    payloads = bool(getattr(settings, "log_requests", False))
    max_len = getattr(settings, "max_log_len", None)
    max_body = int(getattr(settings, "max_request_body_bytes", 8 * 1024 * 1024))

    def middleware(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = [0]
            tap = _Payloads(scope, max_len, max_body) if payloads and scope.get("method") == "POST" else None

            async def tapped_receive():
                message = await receive()
                tap.request_chunk(message)
                return message

            async def record(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                if tap is not None:
                    tap.response_message(message)
                await send(message)

            try:
                await app(scope, tapped_receive if tap is not None else receive, record)
            finally:
                state = scope.get("state", {})
                usage = state.get("usage") or {}
                client = scope.get("client") or ("-", 0)
                logger.info(
                    '%s "%s %s" %s %.1fms prompt_tokens=%s completion_tokens=%s request_id=%s',
                    client[0], scope.get("method"), scope.get("path"), status[0],
                    (time.perf_counter() - start) * 1000,
                    usage.get("prompt_tokens", "-"), usage.get("completion_tokens", "-"),
                    state.get("request_id", "-"),
                )
                if tap is not None:
                    tap.finish(status[0])

        return wrapped

    return middleware
