"""The middleware-plugin contract: a factory from server settings to Litestar middleware."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ("MiddlewareFactory",)


@runtime_checkable
class MiddlewareFactory(Protocol):
    """``factory(settings)`` returns Litestar middleware (a ``DefineMiddleware``, a
    ``MiddlewareProtocol`` class, or an ``AbstractMiddleware`` subclass).

    ``settings`` is the resolved server settings object; read what you need (e.g. CORS origins)
    from it. Middlewares wrap the built-in API-key check and the router, the first name of
    ``--middleware`` outermost, so they also see 401s and unknown-route 404s; each is called as
    ``middleware(app=...)`` around the rest of the stack.
    """

    def __call__(self, settings: Any) -> Any:
        """Build the middleware for a server started with ``settings``."""
