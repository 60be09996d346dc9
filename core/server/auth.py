"""Built-in API-key check, always on when keys are configured.

It sits inside the operator's middleware plugins and outside the router (see
:mod:`heron.server.middleware_stack`), so a 401 carries CORS headers and reaches the access log.
"""

from __future__ import annotations

import hmac
import json

from litestar.types import ASGIApp, Receive, Scope, Send

from heron.server.errors import error_body

__all__ = ("OPEN_PATHS", "api_key_middleware")

#: routes reachable without a key (load balancers and probes; "/" is the static chat page)
OPEN_PATHS = frozenset({"/health", "/ping", "/version", "/"})


def _matches(given: bytes, keys: list[bytes]) -> bool:
    # compare against every key so timing does not reveal which (or whether a prefix) matched
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return ok


def _route(scope: Scope) -> str:
    """The path the router matches: without ``--root-path``, which uvicorn puts in front of it."""
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


def api_key_middleware(keys: list[str], *, metrics_no_auth: bool = False):
    """ASGI middleware factory checking ``Authorization: Bearer KEY`` (or ``x-api-key``).

    Args:
        keys: the accepted keys; none: every request passes.
        metrics_no_auth: ``--metrics-no-auth``: ``/metrics`` is open too (Prometheus scrapers on a
            private network); off by default.
    """
    encoded = [k.encode() for k in keys]
    open_paths = OPEN_PATHS | {"/metrics"} if metrics_no_auth else OPEN_PATHS

    def middleware(app: ASGIApp) -> ASGIApp:
        async def check(scope: Scope, receive: Receive, send: Send) -> None:
            if (scope["type"] != "http" or not encoded or _route(scope) in open_paths
                    or scope.get("method") == "OPTIONS"):
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
            if _matches(given, encoded):
                await app(scope, receive, send)
                return
            body = json.dumps(error_body(401, "Invalid or missing API key; send 'Authorization: Bearer <key>'.",
                                         code="invalid_api_key")).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})

        return check

    return middleware
