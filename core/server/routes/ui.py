"""The chat page at ``/`` (``--ui``, on by default; ``--no-ui`` turns it off).

The page is one static, self-contained HTML file shipped as package data (``heron/server/ui``):
no CDN, no build step. It is served without an API key (it holds no data; :data:`OPEN_PATHS
<heron.server.auth.OPEN_PATHS>` lists ``/``) and calls the OpenAI-compatible routes like any
client, with the key the user types into it. It is left out of the OpenAPI document: it is a page
for people, not an operation for API clients.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

__all__ = ("PAGE_HEADERS", "chat_page", "ui_routes")

#: the page may only talk to its own origin (an API key lives in it) and may not be framed
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
}


@cache
def chat_page() -> str:
    """The page's HTML, read once from the installed package."""
    return files("heron.server").joinpath("ui", "index.html").read_text(encoding="utf-8")


def ui_routes() -> list[HTTPRouteHandler]:
    """``GET /``: the chat page (register only when ``settings.ui``)."""

    @get("/", include_in_schema=False, media_type="text/html")
    async def index() -> Response[str]:
        return Response(chat_page(), media_type="text/html", headers=PAGE_HEADERS)

    return [index]
