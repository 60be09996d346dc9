"""The middleware-plugin contract: a factory from server settings to Litestar middleware."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ("MiddlewareFactory",)


@runtime_checkable
class MiddlewareFactory(Protocol):
    """``factory(settings)`` returns Litestar middleware (a ``DefineMiddleware``, a
    ``MiddlewareProtocol`` class, or an ``AbstractMiddleware`` subclass).

    ``settings`` is the resolved server settings object; read what you need (e.g. CORS origins)
    from it. Middlewares run after the built-in API-key check, in ``--middleware`` order.
    """

    def __call__(self, settings: Any) -> Any:
        """Build the middleware for a server started with ``settings``."""
