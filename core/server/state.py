"""What every route handler needs: settings, the engine client, tokenizer, template, metrics."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Request
from pydantic import BaseModel, ValidationError

from heron.server.errors import APIError
from heron.server.metrics import ServerMetrics
from heron.server.settings import ServerSettings

__all__ = ("ServerState", "new_id", "read_body")

logger = logging.getLogger("heron.server")
M = TypeVar("M", bound=BaseModel)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class ServerState:
    settings: ServerSettings
    engine: Any  # heron.engine EngineClient: generate(), abort(), stats(), tokenizer, max_model_len
    chat_template: str | None
    metrics: ServerMetrics | None
    loading: bool = False
    draining: bool = False
    in_flight: int = 0
    failure: str | None = field(default=None)

    @property
    def model_name(self) -> str:
        return self.settings.model_names[0]

    def check_model(self, requested: str | None) -> None:
        if requested and requested not in self.settings.model_names:
            raise APIError(404, f"The model '{requested}' does not exist; this server serves "
                                f"{', '.join(self.settings.model_names)}.", param="model", code="model_not_found")

    def attach(self, engine: Any, chat_template: str | None) -> None:
        """The model finished loading: start serving requests."""
        self.engine, self.chat_template = engine, chat_template
        self.loading = False

    def require_engine(self) -> Any:
        if self.engine is None:
            reason = f"the engine failed to start: {self.failure}" if self.failure else "the model is still loading"
            raise APIError(503, f"Not ready: {reason}.", headers={"Retry-After": "5"})
        return self.engine

    def stats(self) -> dict[str, Any]:
        return self.engine.stats() if self.engine is not None else {}

    def check_capacity(self) -> None:
        self.require_engine()
        if self.draining:
            raise APIError(503, "The server is shutting down.", headers={"Retry-After": "5"})
        error = getattr(self.engine, "error", None)
        if error is not None:
            raise APIError(503, f"The engine has failed: {error}", headers={"Retry-After": "30"})
        waiting = self.engine.stats().get("num_waiting", 0)
        if waiting >= self.settings.max_waiting_requests:
            raise APIError(503, f"Too many requests waiting ({waiting}); retry shortly.",
                           headers={"Retry-After": "1"}, code="queue_full")


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _param(loc: tuple) -> str:
    """A pydantic error location as a request path, without the union-member tags (``prompt.str``)."""
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))


async def read_body(request: Request, model: type[M], max_bytes: int) -> M:
    """Read and validate a JSON body; every failure is a 4xx naming the problem."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype not in ("application/json", "", "text/json") and not ctype.endswith("+json"):
        raise APIError(415, f"Content-Type must be application/json, got {ctype!r}.")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise APIError(413, f"Request body of {length} bytes exceeds the {max_bytes}-byte limit.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise APIError(413, f"Request body exceeds the {max_bytes}-byte limit.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise APIError(400, f"Request body is not valid UTF-8 (byte {err.start}).") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise APIError(400, f"Request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}.") from err
    if not isinstance(data, dict):
        raise APIError(400, "Request body must be a JSON object.")
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        param = _param(errors[0].get("loc", ()))
        # a union field fails once per member ("a valid string", "a valid list"): say them all
        msgs = list(dict.fromkeys(e.get("msg", "") for e in errors if _param(e.get("loc", ())) == param))
        raise APIError(400, f"Invalid value for '{param}': {'; or '.join(msgs)}.", param=param or None) from err
    extra = getattr(parsed, "unknown_fields", lambda: [])()
    if extra:
        logger.info("ignoring unknown request fields: %s", ", ".join(extra))
    return parsed
