"""``example_header``: adds ``X-Heron-Example: 1`` to every HTTP response."""

from __future__ import annotations

from typing import Any

__all__ = ("header_middleware",)


def header_middleware(settings: Any):
    """Factory (settings) -> ASGI middleware: Litestar accepts ``app -> app`` callables."""

    def middleware(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return

            async def send_with_header(message):
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"x-heron-example", b"1")]
                await send(message)

            await app(scope, receive, send_with_header)

        return wrapped

    return middleware
