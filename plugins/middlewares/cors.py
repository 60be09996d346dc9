"""``cors``: CORS headers and preflight answers.

Two ways to configure it. vLLM's flags (``--allowed-origins``, ``--allow-credentials``,
``--allowed-methods``, ``--allowed-headers``; any of them turns this middleware on) with vLLM's
defaults for the ones not given (every origin, method and header, no credentials); or, when none
of them is set, heron's ``--cors-origins`` with every method and header. ``"*"`` in a list
allows anything; with credentials allowed the caller's origin is echoed instead of ``*`` (browsers
refuse ``*`` there). A preflight from an origin, method or header not allowed gets a 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ("CorsPolicy", "cors_middleware")

#: headers a browser may send without them being allowed (the CORS "safelisted" request headers)
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})
_ALL_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


@dataclass(frozen=True)
class CorsPolicy:
    """Who may call from a browser: origins, methods, request headers, and whether with credentials."""

    origins: tuple[str, ...] = ("*",)
    methods: tuple[str, ...] = ("*",)
    headers: tuple[str, ...] = ("*",)
    credentials: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> CorsPolicy:
        """vLLM's flags when any is set (they win over ``cors_origins``), else ``cors_origins``."""
        origins, methods, headers = (getattr(settings, name, None) for name in
                                     ("allowed_origins", "allowed_methods", "allowed_headers"))
        credentials = bool(getattr(settings, "allow_credentials", False))
        if credentials or any(v is not None for v in (origins, methods, headers)):
            return cls(origins=tuple(origins if origins is not None else ["*"]),
                       methods=tuple(m.upper() for m in (methods if methods is not None else ["*"])),
                       headers=tuple(h.lower() for h in (headers if headers is not None else ["*"])),
                       credentials=credentials)
        return cls(origins=tuple(getattr(settings, "cors_origins", None) or ["*"]))

    def allow_origin(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None when it is not allowed."""
        if "*" in self.origins:
            return origin if self.credentials else "*"
        return origin if origin in self.origins else None

    def allow_method(self, method: str) -> bool:
        return "*" in self.methods or method.upper() in self.methods

    def allow_headers(self, requested: str) -> bool:
        wanted = {h.strip().lower() for h in requested.split(",") if h.strip()}
        return "*" in self.headers or wanted <= _SAFELISTED | set(self.headers)

    def preflight_headers(self, allow: str, requested_headers: str) -> list[tuple[bytes, bytes]]:
        """The headers of a successful preflight answer."""
        methods = _ALL_METHODS if "*" in self.methods else ", ".join(self.methods)
        if "*" in self.headers:
            headers = requested_headers or "authorization, content-type"
        else:
            headers = ", ".join(sorted(_SAFELISTED | set(self.headers)))
        out = [(b"access-control-allow-origin", allow.encode("latin-1")),
               (b"access-control-allow-methods", methods.encode("latin-1")),
               (b"access-control-allow-headers", headers.encode("latin-1")),
               (b"access-control-max-age", b"600"), (b"vary", b"Origin")]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return out


def cors_middleware(settings: Any):
    """Factory: the policy comes from :meth:`CorsPolicy.from_settings`."""
    policy = CorsPolicy.from_settings(settings)

    def middleware(app):
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1")
            allow = policy.allow_origin(origin) if origin else None
            if scope["method"] == "OPTIONS" and origin and b"access-control-request-method" in headers:
                await _preflight(policy, allow, headers, send)
                return

            async def add_headers(message):
                if message["type"] == "http.response.start" and allow:
                    extra = [(b"access-control-allow-origin", allow.encode("latin-1")), (b"vary", b"Origin")]
                    if policy.credentials:
                        extra.append((b"access-control-allow-credentials", b"true"))
                    message["headers"] = [*message.get("headers", []), *extra]
                await send(message)

            await app(scope, receive, add_headers)

        return wrapped

    return middleware


async def _preflight(policy: CorsPolicy, allow: str | None, headers: dict[bytes, bytes], send) -> None:
    """Answer an ``OPTIONS`` preflight: 204 with the allowances, or 403 when something is not allowed."""
    method = headers.get(b"access-control-request-method", b"").decode("latin-1")
    requested = headers.get(b"access-control-request-headers", b"").decode("latin-1")
    ok = allow is not None and policy.allow_method(method) and policy.allow_headers(requested)
    out = [(b"content-length", b"0")]
    if ok:
        out += policy.preflight_headers(allow, requested)
    await send({"type": "http.response.start", "status": 204 if ok else 403, "headers": out})
    await send({"type": "http.response.body", "body": b""})
