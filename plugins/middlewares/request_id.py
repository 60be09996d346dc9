"""``request_id``: accept ``X-Request-Id`` (or make one) and echo it on the response."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ("request_id_middleware",)


def request_id_middleware(settings: Any):
    """Factory: the id is stored in ``scope["state"]["request_id"]`` for handlers and logs."""

    def middleware(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1").strip()
            rid = given[:128] or uuid.uuid4().hex
            scope.setdefault("state", {})["request_id"] = rid

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                    message["headers"] = [*headers, (b"x-request-id", rid.encode("latin-1"))]
                await send(message)

            await app(scope, receive, send_with_id)

        return wrapped

    return middleware
