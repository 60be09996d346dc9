"""vLLM's operational routes, gated as vLLM gates them.

- always: ``POST /invocations`` (SageMaker: the body's fields pick chat, completions,
  embeddings, classify, score or rerank, in vLLM's order) and ``POST /ping`` (as ``GET /ping``);
  ``GET /openapi.json`` unless ``--disable-docs``;
- ``--enable-tokenizer-info-endpoint``: ``GET /tokenizer_info``;
- dev mode (``--server-dev-mode`` or ``VLLM_SERVER_DEV_MODE=1``): ``POST /reset_prefix_cache``,
  ``POST /sleep?level=1|2&mode=abort|wait|keep``, ``POST /wake_up[?tags=weights|kv_cache]``,
  ``GET /is_sleeping``, ``GET /server_info[?config_format=text|json]``; ``/sleep`` also needs
  ``--enable-sleep-mode`` (400 without it);
- a profiler directory (``--torch-profiler-dir`` or ``VLLM_TORCH_PROFILER_DIR``):
  ``POST /start_profile``, ``POST /stop_profile``.

A route that is off is an unknown route (404). As in vLLM, the control routes answer an empty 200.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Stream

from heron.engine.sleep import SLEEP_LEVELS, SLEEP_MODES
from heron.protocol.ops import InvocationRequest
from heron.server.errors import APIError
from heron.server.requests import served_runner
from heron.server.routes.pooling import capabilities
from heron.server.server_info import server_info, tokenizer_info
from heron.server.state import ServerState, read_body

__all__ = ("dev_mode", "ops_routes", "profiler_dir")

logger = logging.getLogger("heron.server")

_TRUE = frozenset({"1", "true", "yes", "on"})


def dev_mode(settings: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the dev routes are served (``--server-dev-mode`` or vLLM's ``VLLM_SERVER_DEV_MODE``)."""
    environ = os.environ if environ is None else environ
    return settings.server_dev_mode or environ.get("VLLM_SERVER_DEV_MODE", "").strip().lower() in _TRUE


def profiler_dir(settings: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """Where profiles go (``--torch-profiler-dir`` or ``VLLM_TORCH_PROFILER_DIR``); None: no profiling routes."""
    environ = os.environ if environ is None else environ
    folder = settings.torch_profiler_dir or environ.get("VLLM_TORCH_PROFILER_DIR", "").strip()
    return os.path.abspath(os.path.expanduser(folder)) if folder else None


def _empty() -> Response:
    return Response(b"", status_code=200, media_type="text/plain")


def _int_param(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise APIError(400, f"'{name}' must be an integer, got {value!r}.", param=name) from None


def _engine_call(state: ServerState, name: str) -> Any:
    """The engine client's ``name`` method, or a 400 when this engine has none."""
    method = getattr(state.require_engine(), name, None)
    if method is None:
        raise APIError(400, f"This engine does not support {name.replace('_', ' ')}.")
    return method


_INVOCATION_FORMS = {
    "generate": "ChatCompletionRequest (messages) or CompletionRequest (prompt)",
    "pooling": "EmbeddingRequest or ClassificationRequest (input or messages), ScoreRequest (text_1 and text_2) "
               "or RerankRequest (query and documents)",
}


def _invocation_target(state: ServerState, req: InvocationRequest) -> str:
    """Which route a SageMaker body goes to, in vLLM's order (chat, completions, embeddings,
    classify, score, rerank, pooling) among those the served model has."""
    given = {k for k, v in req.model_dump(exclude_unset=True).items() if v is not None}
    runner = served_runner(state.engine)
    if runner == "generate":
        for field, route in (("messages", "chat"), ("prompt", "completions")):
            if field in given:
                return route
    elif given & {"input", "messages"}:
        served = capabilities(state)
        return "embeddings" if "embed" in served else "classify" if "classify" in served else "pooling"
    elif {"text_1", "text_2"} <= given:
        return "score"
    elif {"query", "documents"} <= given:
        return "rerank"
    raise APIError(400, f"Cannot find a suitable route for this body: this model ({runner}) takes "
                        f"{_INVOCATION_FORMS.get(runner, runner)}.", code="no_suitable_route")


def ops_routes(state: ServerState, invocable: Mapping[str, Any]) -> list:
    """The routes the settings turn on; ``invocable`` maps chat, completions, embeddings,
    pooling, classify, score, rerank to their route handlers (``/invocations`` calls them)."""
    s = state.settings
    routes: list = [_invocations(state, invocable), _ping()]
    if not s.disable_docs:
        routes.append(_openapi(state))
    if s.enable_tokenizer_info_endpoint:
        routes.append(_tokenizer_info(state))
    if dev_mode(s):
        logger.warning("SECURITY WARNING: development routes are on (/sleep, /wake_up, /reset_prefix_cache, "
                       "/server_info); do not expose this server to untrusted clients.")
        routes += _dev_routes(state)
    folder = profiler_dir(s)
    if folder:
        logger.warning("the torch profiler routes are on (traces go to %s); for local development only.", folder)
        routes += _profiler_routes(state, folder)
    return routes


def _invocations(state: ServerState, invocable: Mapping[str, Any]) -> Any:
    s = state.settings

    @post("/invocations", status_code=200, summary="SageMaker: the body's fields pick the route")
    async def invocations(request: Request) -> Response | Stream:
        await request.body()  # kept on the request: the chosen route reads it again
        req = await read_body(request, InvocationRequest, s.max_request_body_bytes, s.max_json_depth)
        return await invocable[_invocation_target(state, req)].fn(request)

    return invocations


def _ping() -> Any:
    @post("/ping", status_code=200, summary="Liveness probe (SageMaker posts it)")
    async def ping_post() -> dict:
        return {"status": "ok"}

    return ping_post


def _openapi(state: ServerState) -> Any:
    from heron.server.openapi import build_document

    cache: dict[int, dict[str, Any]] = {}

    @get("/openapi.json", summary="The OpenAPI document (as /docs/openapi.json)")
    async def openapi_document(request: Request) -> dict:
        base = request.app.openapi_schema.to_schema()
        return cache.setdefault(0, build_document(base, state.settings))

    return openapi_document


def _tokenizer_info(state: ServerState) -> Any:
    @get("/tokenizer_info", summary="The tokenizer's configuration and chat template")
    async def get_tokenizer_info() -> dict:
        return tokenizer_info(state.require_engine().tokenizer, state.chat_template)

    return get_tokenizer_info


def _dev_routes(state: ServerState) -> list:
    s = state.settings

    @post("/reset_prefix_cache", status_code=200, summary="Forget the cached prefixes no request holds")
    async def reset_prefix_cache() -> Response:
        dropped = await _engine_call(state, "reset_prefix_cache")()
        logger.info("prefix cache reset: %s blocks dropped", dropped)
        return _empty()

    @post("/sleep", status_code=200, summary="Free the KV cache (level 1) and the weights (level 2)")
    async def sleep(level: FromQuery[str] = "1", mode: FromQuery[str] = "abort") -> Response:
        if not s.enable_sleep_mode:
            raise APIError(400, "Sleep mode is off; start the server with --enable-sleep-mode.",
                           code="sleep_mode_disabled")
        number = _int_param(level, "level")
        if number not in SLEEP_LEVELS:
            raise APIError(400, f"'level' must be 1 (free the KV cache) or 2 (also the weights), got {number}.",
                           param="level")
        if mode not in SLEEP_MODES:
            raise APIError(400, f"'mode' must be one of {', '.join(SLEEP_MODES)}, got {mode!r}.", param="mode")
        try:
            await _engine_call(state, "sleep")(number, mode)
        except ValueError as err:  # e.g. level 2 with LoRA adapters
            raise APIError(400, str(err), param="level") from err
        return _empty()

    @post("/wake_up", status_code=200, summary="Reload what /sleep released")
    async def wake_up(tags: FromQuery[list[str] | None] = None) -> Response:
        try:
            await _engine_call(state, "wake_up")(tags or None)
        except ValueError as err:
            raise APIError(400, str(err), param="tags") from err
        return _empty()

    @get("/is_sleeping", summary="Whether the engine is asleep")
    async def is_sleeping() -> dict:
        return {"is_sleeping": getattr(state.require_engine(), "is_sleeping", False) is True}

    @get("/server_info", summary="Settings, engine configuration and environment")
    async def show_server_info(config_format: FromQuery[str] = "text") -> dict:
        return server_info(state, config_format)

    return [reset_prefix_cache, sleep, wake_up, is_sleeping, show_server_info]


def _profiler_routes(state: ServerState, folder: str) -> list:
    @post("/start_profile", status_code=200, summary="Start the torch profiler")
    async def start_profile() -> Response:
        try:
            await _engine_call(state, "start_profile")(folder)
        except ValueError as err:
            raise APIError(400, str(err)) from err
        logger.info("profiler started")
        return _empty()

    @post("/stop_profile", status_code=200, summary="Stop the torch profiler and write its trace")
    async def stop_profile() -> Response:
        try:
            files = await _engine_call(state, "stop_profile")()
        except ValueError as err:
            raise APIError(400, str(err)) from err
        logger.info("profiler stopped; trace: %s", ", ".join(map(str, files)) or "(none)")
        return _empty()

    return [start_profile, stop_profile]

