"""The OpenAI-compatible HTTP server: Litestar app, routes, SSE, errors, auth, metrics."""

from heron.server.app import build_app
from heron.server.errors import APIError
from heron.server.settings import ServerSettings, add_serve_arguments, settings_from_args

__all__ = ("APIError", "ServerSettings", "add_serve_arguments", "build_app", "settings_from_args")
