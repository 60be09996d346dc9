"""``access_log``: one line per request with status, latency and token counts."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ("access_log_middleware",)

logger = logging.getLogger("heron.access")


def access_log_middleware(settings: Any):
    """Factory: token counts come from ``scope["state"]["usage"]`` when a handler set them."""

    def middleware(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = [0]

            async def record(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, record)
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

        return wrapped

    return middleware
