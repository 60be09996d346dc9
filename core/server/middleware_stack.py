"""Put the API-key check and the operator's middleware plugins around the whole application.

Litestar runs its own ``middleware=`` only for requests that match a route, so unknown paths
(404) and wrong methods (405) would bypass them. heron instead wraps the app's ASGI handler (the
router inside Litestar's exception handling): ``--middleware`` plugins, outermost first, then
the API-key check, then routing. Every response, a 401 or a 404 included, passes through every
middleware, so CORS headers, access logs and request ids cover them all. A middleware that
raises is logged with its plugin's name and the client gets an OpenAI-shaped 500 (through the
middlewares outside it, so it still carries their headers). With ``--root-path``, an outermost
layer serves everything under that prefix as well as without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from litestar import Litestar
from litestar.types import ASGIApp, Receive, Scope, Send

from heron.plugins.checks import middleware_from
from heron.plugins.registry import PluginLoadError, registry
from heron.server.auth import api_key_middleware
from heron.server.errors import error_body

__all__ = ("middleware_names", "wrap_app")

logger = logging.getLogger("heron.server")
_FROM_BELOW = "heron_raised_below_middleware"  # set on an exception that came up through a layer


def middleware_names(settings: Any) -> list[str]:
    """The middleware plugins to run, outermost first (``--middleware``, request ids first when asked)."""
    names = list(settings.middleware)
    if settings.enable_request_id_headers and "request_id" not in names:
        names.insert(0, "request_id")  # vLLM's flag: X-Request-Id on every response
    vllm_cors = (settings.allowed_origins, settings.allowed_methods, settings.allowed_headers)
    if (settings.allow_credentials or any(v is not None for v in vllm_cors)) and "cors" not in names:
        names.insert(0, "cors")  # vLLM's CORS flags turn CORS on (outermost: preflights skip the key check)
    if settings.log_requests and "access_log" not in names:
        names.append("access_log")  # vLLM's request logging: prompts and outputs, cut to --max-log-len
    return names


def _below(app: ASGIApp) -> ASGIApp:
    """``app`` as handed to a middleware: an exception escaping it is tagged as not the middleware's."""

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as err:
            with contextlib.suppress(AttributeError):  # an exception type refusing attributes
                setattr(err, _FROM_BELOW, True)
            raise

    return inner


def _contained(name: str, layer: ASGIApp) -> ASGIApp:
    """Plugin ``name``'s middleware; if it raises (itself, not from below), log it by name and
    answer an OpenAI-shaped 500 through the outer middlewares when no response has started."""

    async def contained(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await layer(scope, receive, tracking)
        except Exception as err:
            if getattr(err, _FROM_BELOW, False) or scope["type"] != "http" or started:
                raise  # the app's own error (Litestar reported it), or too late to answer
            logger.exception("middleware plugin %r failed on %s %s", name, scope.get("method"), scope.get("path"))
            body = json.dumps(error_body(500, f"The server's middleware plugin {name!r} failed; see the server log.",
                                         code="middleware_error")).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

    return contained


def wrap_app(app: Litestar, settings: Any) -> None:
    """Wrap ``app``'s whole ASGI handler: plugins (outermost first) -> API-key check -> routes.

    Raises:
        PluginLoadError: a middleware factory gave back something that is not a middleware (the
            message is one line naming the plugin); UnknownPluginError for an unknown name.
    """
    reg = registry("middlewares")
    handler = api_key_middleware(settings.api_key, metrics_no_auth=getattr(settings, "metrics_no_auth", False))(
        app.asgi_handler)
    for name in reversed(middleware_names(settings)):
        made, problem = middleware_from(reg.load(name), settings)
        if problem:
            info = reg.entry_points().get(name)
            target = info.target if info is not None else reg.origin(name)
            raise PluginLoadError("middlewares", name, target, problem, (problem,))
        handler = _contained(name, made(app=_below(handler)))
    root = settings.root_path.rstrip("/")
    app.asgi_handler = _under_root(root, handler) if root else handler


def _under_root(root: str, app: ASGIApp) -> ASGIApp:
    """Serve ``app`` both at ``/...`` and at ``root/...`` (``--root-path``, a proxy's prefix), as vLLM does.

    The scope gets ``root_path`` and a path that starts with it (the router takes it off again),
    whether or not the proxy already stripped the prefix; middlewares see that full path.
    """
    prefix = root.encode("latin-1")

    async def rooted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path != root and not path.startswith(root + "/"):
                scope["path"] = root + path
                if scope.get("raw_path") is not None:
                    scope["raw_path"] = prefix + scope["raw_path"]
            scope["root_path"] = root
        await app(scope, receive, send)

    return rooted
