"""``cors``: CORS headers and preflight answers for the origins in ``settings.cors_origins``."""

from __future__ import annotations

from typing import Any

__all__ = ("cors_middleware",)


def cors_middleware(settings: Any):
    """Factory using ``settings.cors_origins`` (``["*"]`` allows any origin)."""
    origins = list(getattr(settings, "cors_origins", None) or ["*"])

    def allowed(origin: str) -> str | None:
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    def middleware(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1")
            allow = allowed(origin) if origin else None
            if scope["method"] == "OPTIONS" and origin and b"access-control-request-method" in headers:
                status = 204 if allow else 403
                out = [(b"content-length", b"0")]
                if allow:
                    out += [
                        (b"access-control-allow-origin", allow.encode()),
                        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                        (b"access-control-allow-headers",
                         headers.get(b"access-control-request-headers", b"authorization, content-type")),
                        (b"access-control-max-age", b"600"),
                    ]
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": b""})
                return

            async def add_headers(message):
                if message["type"] == "http.response.start" and allow:
                    message["headers"] = [*message.get("headers", []), (b"access-control-allow-origin", allow.encode()),
                                          (b"vary", b"Origin")]
                await send(message)

            await app(scope, receive, add_headers)

        return wrapped

    return middleware
