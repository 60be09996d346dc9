"""Build the Litestar application around an engine client."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar

from heron.server.errors import exception_handlers
from heron.server.lora import LoRAServing
from heron.server.metrics import ServerMetrics
from heron.server.middleware_stack import wrap_app
from heron.server.openapi import openapi_config
from heron.server.routes.chat import chat_route
from heron.server.routes.completions import completions_route
from heron.server.routes.embeddings import embeddings_routes
from heron.server.routes.lora import lora_routes
from heron.server.routes.misc import misc_routes
from heron.server.routes.ops import ops_routes
from heron.server.routes.pooling import classify_route
from heron.server.routes.responses import responses_routes
from heron.server.routes.score import score_routes
from heron.server.routes.ui import ui_routes
from heron.server.settings import ServerSettings
from heron.server.state import ServerState

__all__ = ("build_app",)

logger = logging.getLogger("heron.server")


def build_app(settings: ServerSettings, engine: Any | None = None, *, chat_template: str | None = None) -> Litestar:
    """The app: ``settings.middleware`` plugins (outermost first), then API-key auth, then routes.

    The middlewares and the key check wrap the whole ASGI handler, so 401s, unknown-route 404s
    and 405s pass through every middleware too (see :mod:`heron.server.middleware_stack`).

    With ``engine=None`` the app starts in the loading state (``/health`` is 503) until
    ``app.state.heron.attach(engine, template)`` is called.
    """
    state = ServerState(settings=settings, engine=engine, chat_template=chat_template, metrics=None,
                        loading=engine is None, render_limits=settings.render_limits(), lora=LoRAServing(settings))
    state.metrics = ServerMetrics(settings.model_names[0], state.stats, prefixes=settings.metrics_prefix,
                                  max_model_len=lambda: getattr(state.engine, "max_model_len", None))
    responses, service = responses_routes(state)
    chat, completions, classify = chat_route(state), completions_route(state), classify_route(state)
    (embeddings, pooling), (score, rerank) = embeddings_routes(state), score_routes(state)
    invocable = {"chat": chat, "completions": completions, "embeddings": embeddings, "pooling": pooling,
                 "classify": classify, "score": score, "rerank": rerank}  # what SageMaker's /invocations reaches
    app = Litestar(
        route_handlers=[chat, completions, *responses, embeddings, pooling, classify, score, rerank,
                        *misc_routes(state), *lora_routes(state), *ops_routes(state, invocable),
                        *(ui_routes() if settings.ui else [])],
        on_shutdown=[service.close],
        exception_handlers=exception_handlers,
        openapi_config=None if settings.disable_docs else openapi_config(settings),  # --disable-docs: no docs routes
        request_max_body_size=settings.max_request_body_bytes,
        debug=False,
    )
    app.state.heron = state
    app.asgi_handler = state.metrics.http.wrap(app.asgi_handler)  # inside the key check: 401s uncounted, as vLLM
    wrap_app(app, settings)  # a factory that returns no middleware: PluginLoadError naming it
    return app
