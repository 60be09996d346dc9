"""What every route handler needs: settings, the engine client, tokenizer, template, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Request
from pydantic import BaseModel, ValidationError

from heron.server.errors import APIError
from heron.server.metrics import ServerMetrics
from heron.server.settings import ServerSettings

__all__ = ("Admission", "ServerState", "new_id", "read_body")

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
    #: sequences (prompts x n) admitted and not finished; the queue-length check counts these
    active_seqs: int = 0
    failure: str | None = field(default=None)
    #: bounds on rendering a chat template (heron.chat.RenderLimits; None = the defaults)
    render_limits: Any = None
    #: LoRA adapter resolution and runtime loading (heron.server.lora.LoRAServing; made on first use)
    lora: Any = None

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

    @property
    def vocab_size(self) -> int:
        """Token ids a request may name: the model's vocabulary (its logits' width)."""
        engine = self.require_engine()
        size = getattr(engine, "vocab_size", None) or getattr(getattr(engine, "engine", None), "vocab_size", None)
        return int(size or len(engine.tokenizer))

    def check_ready(self) -> None:
        """503 unless the engine is loaded, alive and not draining."""
        self.require_engine()
        if self.draining:
            raise APIError(503, "The server is shutting down.", headers={"Retry-After": "5"})
        error = getattr(self.engine, "error", None)
        if error is not None:
            raise APIError(503, f"The engine has failed: {error}", headers={"Retry-After": "30"})
        if getattr(self.engine, "is_sleeping", False) is True:  # POST /sleep (heron.engine.sleep)
            raise APIError(503, "The model is asleep; POST /wake_up first.", headers={"Retry-After": "5"},
                           code="model_sleeping")

    def admit(self, num_seqs: int) -> Admission:
        """Reserve room for ``num_seqs`` sequences (prompts x n), or 503 when the queue is full.

        Counting happens here, synchronously, before the handler awaits anything, so a burst of
        requests sees every earlier one: sequences beyond ``--max-num-seqs`` are waiting, and once
        ``--max-waiting-requests`` of them wait, new requests are refused until some finish.
        """
        self.check_ready()
        waiting = max(0, self.active_seqs - self.settings.max_num_seqs)
        if waiting >= self.settings.max_waiting_requests:
            raise APIError(503, f"Too many sequences waiting ({waiting}); retry shortly.",
                           headers={"Retry-After": "1"}, code="queue_full")
        self.active_seqs += num_seqs
        return Admission(self, num_seqs)


class Admission:
    """Room held for one request's sequences; ``release()`` (idempotent) gives it back."""

    __slots__ = ("_state", "num_seqs")

    def __init__(self, state: ServerState, num_seqs: int) -> None:
        self._state, self.num_seqs = state, num_seqs

    def release(self) -> None:
        if self._state is not None:
            self._state.active_seqs -= self.num_seqs
            self._state = None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _param(loc: tuple) -> str:
    """A pydantic error location as a request path, without the union-member tags (``prompt.str``)."""
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))


#: bodies larger than this are parsed and validated in a worker thread, off the event loop
_OFF_LOOP_BYTES = 64 * 1024


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _depth_ok(data: Any, limit: int) -> bool:
    """Whether ``data`` nests at most ``limit`` arrays/objects deep (iterative: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return True


def _has_lone_surrogate(data: Any) -> bool:
    """Whether a string (key or value) holds half of a UTF-16 pair: JSON can escape one, but it
    is not text, and tokenizers refuse it."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _decode(raw: bytes, model: type[M], max_depth: int) -> M:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise APIError(400, f"Request body is not valid UTF-8 (byte {err.start}).") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise APIError(400, f"Request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}.") from err
    except RecursionError as err:
        raise APIError(400, f"Request body nests deeper than the server allows ({max_depth} levels; "
                            "--max-json-depth).", code="json_too_deep") from err
    if not isinstance(data, dict):
        raise APIError(400, "Request body must be a JSON object.")
    if not _depth_ok(data, max_depth):
        raise APIError(400, f"Request body nests deeper than the server allows ({max_depth} levels; "
                            "--max-json-depth).", code="json_too_deep")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(data):
        raise APIError(400, "Request body contains a lone UTF-16 surrogate escape (e.g. \\ud800), which is not "
                            "text; send valid Unicode.")
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        param = _param(errors[0].get("loc", ()))
        # a union field fails once per member ("a valid string", "a valid list"): say them all
        same = [e for e in errors if _param(e.get("loc", ())) == param]
        msgs = list(dict.fromkeys(e.get("msg", "") for e in same))
        kinds = ", ".join(dict.fromkeys(e.get("type", "") for e in same))  # pydantic's names, as vLLM shows them
        raise APIError(400, f"Invalid value for '{param}': {'; or '.join(msgs)} ({kinds}).",
                       param=param or None) from err
    except RecursionError as err:
        raise APIError(400, "Request body nests too deeply to validate.", code="json_too_deep") from err
    return parsed


async def read_body(request: Request, model: type[M], max_bytes: int, max_depth: int = 64) -> M:
    """Read and validate a JSON body; every failure is a 4xx naming the problem.

    Large bodies are decoded and validated in a worker thread so that a few megabytes of JSON
    never stall the streams other clients are reading.
    """
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
    if len(raw) > _OFF_LOOP_BYTES:
        parsed = await asyncio.to_thread(_decode, raw, model, max_depth)
    else:
        parsed = _decode(raw, model, max_depth)
    extra = getattr(parsed, "unknown_fields", lambda: [])()
    if extra:
        logger.info("ignoring unknown request fields: %s", ", ".join(extra))
    return parsed
