"""``/v1/responses``: create (whole, streamed, background), retrieve, delete, input items, cancel.

Creating a response is the chat pipeline with the Responses wire shape: the input (and the stored
conversation a ``previous_response_id`` continues) becomes a chat request
(:mod:`heron.server.responses.convert`), :func:`~heron.server.chat_request.prepare_chat` renders,
tokenizes and builds the parsers and sampling parameters, and a
:class:`~heron.server.responses.runs.ResponseRun` turns the engine's deltas into output items and
stream events. Stored responses live in the ``--response-store`` plugin.
"""

from __future__ import annotations

import copy
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from heron.interfaces.response_store import StoredResponse
from heron.plugins import registry
from heron.protocol.responses import ResponsesRequest
from heron.server.chat_request import PreparedChat, prepare_chat
from heron.server.errors import APIError
from heron.server.lora import resolve_model
from heron.server.requests import Job, RequestContext
from heron.server.responses.convert import (
    chat_request,
    check_request,
    drop_oldest_turn,
    item_id,
    read_input,
    rename_error,
    wants_logprobs,
)
from heron.server.responses.output import ResponseBuilder
from heron.server.responses.runs import ResponseRun, Responses, not_found
from heron.server.sampling import check_request_limits, check_structured
from heron.server.state import ServerState, read_body

__all__ = ("responses_routes",)


def _prepare(state: ServerState, req: ResponsesRequest, messages: list[dict[str, Any]]) -> PreparedChat:
    """Render and tokenize; with ``truncation: auto`` drop the oldest turns until the input fits."""
    while True:
        try:
            prep = prepare_chat(state, chat_request(req, messages))
        except APIError as err:
            shorter = drop_oldest_turn(messages) if err.code == "context_length_exceeded" else None
            if req.truncation == "auto" and shorter is not None:
                messages = shorter
                continue
            raise rename_error(err) from None
        if req.max_tool_calls is not None:
            prep.max_calls = min(prep.max_calls or req.max_tool_calls, req.max_tool_calls)
        return prep


def _tools_echo(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"type": "function", "name": t.get("name"), "description": t.get("description"),
             "parameters": t.get("parameters"), "strict": t.get("strict")} for t in tools or []]


def _new_response(state: ServerState, req: ResponsesRequest, prep: PreparedChat) -> dict[str, Any]:
    """The response object before any output: the request's settings as OpenAI echoes them."""
    reasoning = req.reasoning
    fmt = req.text.format if req.text and req.text.format else {"type": "text"}
    return {
        "id": item_id("resp"), "object": "response", "created_at": int(time.time()),
        "status": "queued" if req.background else "in_progress", "completed_at": None, "error": None,
        "incomplete_details": None, "instructions": req.instructions, "model": state.model_name, "output": [],
        "parallel_tool_calls": req.parallel_tool_calls is not False, "tool_choice": req.tool_choice or "auto",
        "tools": _tools_echo(req.tools), "temperature": prep.params.temperature, "top_p": prep.params.top_p,
        "max_output_tokens": req.max_output_tokens, "max_tool_calls": req.max_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": reasoning.effort if reasoning else None,
                      "summary": reasoning.summary if reasoning else None},
        "text": {"format": fmt, "verbosity": "medium"}, "truncation": req.truncation or "disabled",
        "store": req.store is not False, "background": bool(req.background),
        "metadata": req.metadata or {}, **({"user": req.user} if req.user is not None else {}),
        "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key, "service_tier": req.service_tier or "default",
        "top_logprobs": req.top_logprobs or 0,
    }


def _sse(events: AsyncIterator[dict[str, Any]], on_close: Callable[[], None] | None = None) -> Stream:
    """Server-sent events as OpenAI sends them: ``event: <type>`` and ``data: <json>``, no ``[DONE]``."""

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
                yield f"event: {event['type']}\ndata: {data}\n\n".encode()
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if on_close is not None:
                on_close()

    gen = lines()
    if on_close is not None:
        weakref.finalize(gen, on_close)  # a stream never started still gives its room back
    return Stream(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _history(service: Responses, req: ResponsesRequest) -> list[dict[str, Any]]:
    """The conversation a ``previous_response_id`` continues (its instructions are not carried over)."""
    if not req.previous_response_id:
        return []
    record = await service.store.get(req.previous_response_id)
    if record is not None:
        return record.messages
    if req.previous_response_id in service.runs:
        raise APIError(400, f"Response '{req.previous_response_id}' has not finished yet; continue it once it "
                            "has.", param="previous_response_id")
    raise APIError(404, f"Previous response with id '{req.previous_response_id}' not found.",
                   param="previous_response_id", code="previous_response_not_found")


def responses_routes(state: ServerState) -> tuple[list[Any], Responses]:
    """The five routes and the service (store + background runs) behind them."""
    service = Responses(registry("response_stores").load(state.settings.response_store)(state.settings))

    @post("/v1/responses", status_code=200, summary="Create a model response")
    async def create(request: Request) -> Response | Stream:
        s = state.settings
        req = await read_body(request, ResponsesRequest, s.max_request_body_bytes, s.max_json_depth)
        lora = await resolve_model(state, req.model)
        check_request(req)
        conv = read_input(req.input)
        messages = [*await _history(service, req), *conv.messages]
        try:
            check_request_limits(s, chat_request(req, messages))
        except APIError as err:
            raise rename_error(err) from None
        ctx = RequestContext.open(state, request, req, prefix="resp", num_seqs=1, lora=lora)
        with ctx.guard():
            prep = await ctx.off_loop(_prepare, state, req, messages)
            await check_structured(state, prep.structured, prep.structured_param)
        ctx.submit([Job(0, None, prep.prompt_ids, prep.params)])
        response = _new_response(state, req, prep)
        response["model"] = ctx.model_name  # the adapter's name when one serves it
        record = StoredResponse(response["id"], {}, conv.items, messages, time.time())
        builder = ResponseBuilder(response, events=bool(req.stream or req.background))
        run = ResponseRun(ctx, prep, builder, record=record, store=service.store if req.store is not False else None,
                          top_logprobs=(req.top_logprobs or 0) if wants_logprobs(req) else None)
        if req.background:
            body = copy.deepcopy(response)
            service.start_background(run)
            return _sse(run.follow()) if req.stream else Response(body)
        if req.stream:
            return _sse(run.events(), ctx.close)
        gone = await run.whole()
        return gone if gone is not None else Response(response)

    @get("/v1/responses/{response_id:str}", summary="Retrieve a model response")
    async def retrieve(response_id: FromPath[str], stream: FromQuery[bool] = False,
                       starting_after: FromQuery[int] = -1) -> Response | Stream:
        if stream:
            run = service.runs.get(response_id)
            if run is None:
                if await service.find(response_id) is None:
                    raise not_found(response_id)
                raise APIError(400, "Only background responses can be streamed again, while this server keeps "
                                    "their events.", param="stream")
            return _sse(run.follow(starting_after))
        found = await service.find(response_id)
        if found is None:
            raise not_found(response_id)
        return Response(found[0])

    @delete("/v1/responses/{response_id:str}", status_code=200, summary="Delete a model response")
    async def remove(response_id: FromPath[str]) -> dict[str, Any]:
        if not await service.delete(response_id):
            raise not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    @get("/v1/responses/{response_id:str}/input_items", summary="List a response's input items")
    async def input_items(response_id: FromPath[str], limit: FromQuery[int] = 20, order: FromQuery[str] = "desc",
                          after: FromQuery[str | None] = None) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise APIError(400, f"limit must be between 1 and 100, got {limit}.", param="limit")
        if order not in ("asc", "desc"):
            raise APIError(400, f"order must be 'asc' or 'desc', got {order!r}.", param="order")
        found = await service.find(response_id)
        if found is None:
            raise not_found(response_id)
        items = found[1] if order == "asc" else found[1][::-1]
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise APIError(400, f"No input item '{after}' in response '{response_id}'.", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

    @post("/v1/responses/{response_id:str}/cancel", status_code=200, summary="Cancel a background response")
    async def cancel(response_id: FromPath[str]) -> dict[str, Any]:
        return await service.cancel(response_id)

    return [create, retrieve, remove, input_items, cancel], service
