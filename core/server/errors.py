"""OpenAI-shaped errors: every failure leaves the server as ``{"error": {...}}`` with its status."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from heron.engine.errors import RequestRejectedError

__all__ = ("APIError", "error_body", "error_response", "exception_handlers")

logger = logging.getLogger("heron.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error a client can act on; turned into an OpenAI error response by the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               type: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type or _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(err: APIError) -> Response:
    return Response(
        error_body(err.status, err.message, param=err.param, code=err.code, type=err.type),
        status_code=err.status,
        headers=err.headers,
        media_type="application/json",
    )


def _api_error(_: Request, exc: APIError) -> Response:
    return error_response(exc)


def _http_error(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail or "error"
    if status == 404:
        message = f"Not found: {message}" if message != "Not Found" else "Route not found."
    elif status == 405:
        message = "This route does not accept that HTTP method." if message == "Method Not Allowed" else str(message)
    elif status == 413:
        message = "Request body too large."
    return error_response(APIError(status, str(message), headers=dict(exc.headers or {})))


def _rejected(_: Request, exc: Exception) -> Response:
    """The engine refused the request (e.g. token ids outside the vocabulary): the client's fault."""
    return error_response(APIError(400, str(exc)))


def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(APIError(500, f"Internal server error: {type(exc).__name__}: {exc}"))


exception_handlers = {
    APIError: _api_error,
    RequestRejectedError: _rejected,
    HTTPException: _http_error,
    Exception: _internal_error,
}
