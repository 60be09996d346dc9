"""Build the Litestar application around an engine client."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

import heron
from heron.plugins import registry
from heron.server.auth import api_key_middleware
from heron.server.errors import exception_handlers
from heron.server.metrics import ServerMetrics
from heron.server.routes.chat import chat_route
from heron.server.routes.completions import completions_route
from heron.server.routes.misc import misc_routes
from heron.server.settings import ServerSettings
from heron.server.state import ServerState

__all__ = ("build_app",)

logger = logging.getLogger("heron.server")


def build_app(settings: ServerSettings, engine: Any | None = None, *, chat_template: str | None = None) -> Litestar:
    """The app: API-key auth first, then ``settings.middleware`` plugins in order, then routes.

    With ``engine=None`` the app starts in the loading state (``/health`` is 503) until
    ``app.state.heron.attach(engine, template)`` is called.
    """
    state = ServerState(settings=settings, engine=engine, chat_template=chat_template, metrics=None,
                        loading=engine is None)
    state.metrics = ServerMetrics(settings.model_names[0], state.stats)
    middleware = [api_key_middleware(settings.api_key)]
    names = list(settings.middleware)
    if settings.enable_request_id_headers and "request_id" not in names:
        names.insert(0, "request_id")  # vLLM's flag: X-Request-Id on every response
    for name in names:
        middleware.append(registry("middlewares").load(name)(settings))
    app = Litestar(
        route_handlers=[chat_route(state), completions_route(state), *misc_routes(state)],
        middleware=middleware,
        exception_handlers=exception_handlers,
        openapi_config=OpenAPIConfig(title="heron", version=heron.__version__, path="/docs",
                                     render_plugins=[SwaggerRenderPlugin()]),
        request_max_body_size=settings.max_request_body_bytes,
        debug=False,
    )
    app.state.heron = state
    return app
