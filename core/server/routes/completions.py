"""``POST /v1/completions``: prompts as a string, strings, token ids or lists of token ids."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from heron.engine.errors import RequestRejectedError
from heron.protocol.common import PromptTokensDetails, UsageInfo
from heron.protocol.completions import CompletionChoice, CompletionRequest, CompletionResponse
from heron.server.errors import APIError, error_body
from heron.server.logprobs import completion_logprobs
from heron.server.routes.chat import sse
from heron.server.sampling import (
    build_sampling_params,
    check_structured,
    refuse_unsupported,
    structured_from_request,
)
from heron.server.state import ServerState, new_id, read_body
from heron.server.streams import RequestTimer, iterate_choices, watch_disconnect

__all__ = ("completions_route",)


def _prompts(req: CompletionRequest, tok: Any) -> list[tuple[str, list[int]]]:
    p = req.prompt
    if isinstance(p, str):
        items: list[Any] = [p]
    elif p and all(isinstance(x, int) for x in p):
        items = [p]
    else:
        items = list(p)
    if not items:
        raise APIError(400, "'prompt' must not be empty.", param="prompt")
    out = []
    vocab = len(tok)
    for item in items:
        if isinstance(item, str):
            ids = tok.encode(item, add_special_tokens=True)
            out.append((item, ids))
        else:
            if not item or any(not isinstance(t, int) or t < 0 or t >= vocab for t in item):
                raise APIError(400, f"prompt token ids must be in [0, {vocab}).", param="prompt")
            out.append((tok.decode(item), list(item)))
    if req.truncate_prompt_tokens:
        out = [(t, ids[-req.truncate_prompt_tokens :]) for t, ids in out]
    return out


def completions_route(state: ServerState):
    @post("/v1/completions", status_code=200, summary="Create a completion")
    async def completions(request: Request) -> Response | Stream:
        req = await read_body(request, CompletionRequest, state.settings.max_request_body_bytes)
        state.check_capacity()
        state.check_model(req.model)
        refuse_unsupported(req, chat=False)
        structured, structured_param = structured_from_request(req)
        await check_structured(state, structured, structured_param)
        tok = state.engine.tokenizer
        prompts = _prompts(req, tok)
        jobs = []
        base = req.request_id or new_id("cmpl")
        for i, (text, ids) in enumerate(prompts):
            params = build_sampling_params(
                req, prompt_len=len(ids), max_model_len=state.engine.max_model_len, max_tokens=req.max_tokens
                if req.max_tokens is not None else 16, logprobs=req.logprobs,
                defaults=getattr(state.engine, "generation_defaults", {}) or {}, max_logprobs=state.settings.max_logprobs, structured=structured)
            rid = base if len(prompts) == 1 else f"{base}-{i}"
            jobs.append((i, text, ids, params, rid))
        timer = RequestTimer()
        if req.stream:
            return Stream(_stream(state, req, base, jobs, timer), media_type="text/event-stream",
                          headers={"Cache-Control": "no-cache"})
        return await _whole(state, request, req, base, jobs, timer)

    return completions


async def _run(state, req, job, timer, sink) -> None:
    i, text, ids, params, rid = job
    outputs = state.engine.generate(ids, params, rid, priority=req.priority, cache_salt=req.cache_salt)
    try:
        async for out, deltas in iterate_choices(outputs, timer):
            for d in deltas:
                await sink(i, params.n, text, ids, out, d)
    finally:
        state.engine.abort(rid)


def _queue_time(out: Any) -> float | None:
    return getattr(getattr(out, "metrics", None), "queue_time", None)


def _retrieve(task: asyncio.Future) -> None:
    """Mark a cancelled gather's outcome as seen (else asyncio logs 'exception was never retrieved')."""
    if not task.cancelled():
        task.exception()


def _choice(state, req, i, n, text, ids, d, body: str, offset: int = 0) -> CompletionChoice:
    """``offset``: characters of this choice's output already sent (streaming), for ``text_offset``."""
    lp = None
    if req.logprobs is not None and d.logprobs is not None:
        prefix_len = (len(text) if req.echo else 0) + offset
        lp = completion_logprobs(d.token_ids, d.logprobs, req.logprobs, state.engine.tokenizer, prefix_len)
    return CompletionChoice(index=i * n + d.index, text=body, logprobs=lp, finish_reason=d.finish_reason,
                            stop_reason=d.stop_reason)


async def _whole(state, request, req, base, jobs, timer) -> Response:
    texts: dict[int, list[str]] = {}
    finals: dict[int, tuple] = {}
    queue_times: dict[int, float | None] = {}
    usage = UsageInfo()
    cached = 0

    async def sink(i, n, text, ids, out, d):
        nonlocal cached
        key = i * n + d.index
        texts.setdefault(key, []).append(d.text)
        if d.finish_reason is not None:
            finals[key] = (i, n, text, ids, d)
            queue_times[key] = _queue_time(out)
            cached = max(cached, getattr(out, "num_cached_tokens", 0) or 0)

    state.in_flight += 1
    task = asyncio.ensure_future(asyncio.gather(*[_run(state, req, job, timer, sink) for job in jobs]))
    watcher = asyncio.ensure_future(watch_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=state.settings.request_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            if watcher in done:
                return Response(b"", status_code=499)
            raise APIError(408, f"Request timed out after {state.settings.request_timeout} s.")
        task.result()
    finally:
        watcher.cancel()
        state.in_flight -= 1
        if not task.done():  # client gone, timed out, or this handler was cancelled (shutdown)
            task.cancel()
            task.add_done_callback(_retrieve)
            for i, _, _, params, _ in jobs:
                if any(i * params.n + c not in finals for c in range(params.n)):
                    state.metrics.observe_aborted(e2e=timer.e2e())
    choices = []
    for key in sorted(finals):
        i, n, text, ids, d = finals[key]
        comp = d.output
        body = (text if req.echo else "") + "".join(texts[key])
        choice = _choice(state, req, i, n, text, ids, d, body)
        if req.logprobs is not None and comp.logprobs is not None:
            choice.logprobs = completion_logprobs(list(comp.token_ids), list(comp.logprobs), req.logprobs,
                                                  state.engine.tokenizer, len(text) if req.echo else 0)
        choices.append(choice)
        usage.completion_tokens += len(comp.token_ids)
        state.metrics.observe_finished(prompt_tokens=len(ids) if d.index == 0 else 0,
                                       completion_tokens=len(comp.token_ids), finish_reason=d.finish_reason,
                                       ttft=timer.ttft, e2e=timer.e2e(), queue_time=queue_times[key],
                                       itls=timer.gaps)
    usage.prompt_tokens = sum(len(job[2]) for job in jobs)
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=cached)
    request.scope.setdefault("state", {})["usage"] = usage.model_dump()
    body = CompletionResponse(id=base, model=state.model_name, choices=choices, usage=usage)
    return Response(body.model_dump(), media_type="application/json")


async def _stream(state, req, base, jobs, timer) -> AsyncIterator[bytes]:
    created, model = int(time.time()), state.model_name
    queue: asyncio.Queue = asyncio.Queue()
    echoed: set[int] = set()
    sent: dict[int, int] = {}  # characters of output text sent per choice
    unfinished = {i: params.n for i, _, _, params, _ in jobs}
    completion = 0

    async def sink(i, n, text, ids, out, d):
        await queue.put((i, n, text, ids, d, _queue_time(out)))

    async def run_all():
        try:
            await asyncio.gather(*[_run(state, req, job, timer, sink) for job in jobs])
            await queue.put(None)
        except Exception as err:  # surfaced as one SSE error event
            await queue.put(err)

    state.in_flight += 1
    task = asyncio.ensure_future(run_all())
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, Exception):
                raise item
            i, n, text, ids, d, queue_time = item
            key = i * n + d.index
            body = d.text
            if req.echo and key not in echoed:
                echoed.add(key)
                body = text + body
            choice = _choice(state, req, i, n, text, ids, d, body, sent.get(key, 0))
            sent[key] = sent.get(key, 0) + len(d.text)
            if d.finish_reason is not None:
                unfinished[i] -= 1
                completion += len(d.output.token_ids)
                state.metrics.observe_finished(prompt_tokens=len(ids) if d.index == 0 else 0,
                                               completion_tokens=len(d.output.token_ids), finish_reason=d.finish_reason,
                                               ttft=timer.ttft, e2e=timer.e2e(), queue_time=queue_time,
                                               itls=timer.gaps)
            yield sse({"id": base, "object": "text_completion", "created": created, "model": model,
                       "choices": [choice.model_dump(exclude={"prompt_logprobs"})]})
        if req.stream_options and req.stream_options.include_usage:
            prompt = sum(len(job[2]) for job in jobs)
            yield sse({"id": base, "object": "text_completion", "created": created, "model": model, "choices": [],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}})
        yield sse("[DONE]")
    except APIError as err:
        yield sse(error_body(err.status, err.message, param=err.param, code=err.code))
    except RequestRejectedError as err:
        yield sse(error_body(400, str(err)))
    except Exception as err:
        yield sse(error_body(500, f"Internal error during generation: {type(err).__name__}: {err}"))
    finally:
        task.cancel()
        state.in_flight -= 1
        for _ in [i for i, left in unfinished.items() if left]:  # the client left or generation failed
            state.metrics.observe_aborted(e2e=timer.e2e())
