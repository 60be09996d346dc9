"""``POST /v1/chat/completions``: render, generate, parse, and answer whole or as SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from heron.chat import (
    ChatTemplateError,
    ChoicePipeline,
    normalize_messages,
    normalize_tools,
    render_chat,
)
from heron.chat.tool_choice import NamedToolCallParser, RequiredToolCallsParser
from heron.engine.errors import RequestRejectedError
from heron.plugins import registry
from heron.protocol.chat import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ResponseMessage,
)
from heron.protocol.common import CompletionTokensDetails, PromptTokensDetails, UsageInfo
from heron.server.errors import APIError, error_body
from heron.server.logprobs import chat_logprobs
from heron.server.sampling import (
    build_sampling_params,
    check_structured,
    refuse_unsupported,
    structured_from_request,
)
from heron.server.state import ServerState, new_id, read_body
from heron.server.streams import RequestTimer, iterate_choices, watch_disconnect
from heron.structured import (
    StructuredOutputError,
    StructuredOutputsParams,
    named_tool_schema,
    required_tools_schema,
)

__all__ = ("chat_route", "sse")


def sse(payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@dataclass
class Prepared:
    """What a chat request turned into: prompt, sampling params and how to parse each choice."""

    prompt_ids: list[int]
    params: Any
    structured: Any = None  # StructuredOutputsParams, to validate before generating
    structured_param: str | None = None
    tool_parser: Callable[[], Any] | None = None
    reasoning_parser: Callable[[], Any] | None = None
    max_calls: int | None = None

    def pipeline(self) -> ChoicePipeline:
        return ChoicePipeline(self.reasoning_parser() if self.reasoning_parser else None,
                              self.tool_parser() if self.tool_parser else None, max_calls=self.max_calls)


def _tool_setup(state: ServerState, req: ChatCompletionRequest, tools: list[dict] | None, structured: Any,
                structured_param: str | None) -> tuple[Any, str | None, Callable[[], Any] | None]:
    """tool_choice -> (constraint, its param, tool-parser factory).

    Forced calls are decoded as compact JSON (no free whitespace): small models otherwise tend to
    fill the budget with newlines between JSON tokens.
    """
    s = state.settings
    tok = state.engine.tokenizer
    if not tools:
        return structured, structured_param, None
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    if choice == "none":
        return structured, structured_param, None
    if choice == "auto":
        if not (s.enable_auto_tool_choice and s.tool_call_parser):
            raise APIError(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set.',
                           param="tool_choice")
        cls = registry("tool_parsers").load(s.tool_call_parser)
        return structured, structured_param, lambda: cls(tok, tools)
    if structured is not None:
        raise APIError(400, f"tool_choice {choice!r} cannot be combined with {structured_param}.", param="tool_choice")
    try:
        if choice == "required":
            schema = required_tools_schema(tools, parallel=req.parallel_tool_calls)
            return StructuredOutputsParams(json=schema, disable_any_whitespace=True), "tool_choice", lambda: RequiredToolCallsParser(tok, tools)
        if isinstance(choice, dict) and choice.get("type", "function") == "function":
            name = (choice.get("function") or {}).get("name")
            if not isinstance(name, str):
                raise APIError(400, "tool_choice must name a function: {\"type\": \"function\", "
                                    "\"function\": {\"name\": ...}}.", param="tool_choice")
            schema = named_tool_schema(tools, name)
            return StructuredOutputsParams(json=schema, disable_any_whitespace=True), "tool_choice", lambda: NamedToolCallParser(tok, tools, name=name)
    except StructuredOutputError as err:
        raise APIError(400, str(err), param=err.param) from err
    raise APIError(400, f"tool_choice must be 'none', 'auto', 'required' or a named function, got {choice!r}.",
                   param="tool_choice")


def _thinking(cls: Any, prompt: str, kwargs: dict[str, Any]) -> bool:
    """Whether the model will think: the template kwargs say so, and the prompt has not closed
    the think block already (templates do that when thinking is off)."""
    decide = getattr(cls, "thinking_from_kwargs", None)
    if decide is not None:
        thinking = decide(kwargs)
    else:
        thinking = not any(kwargs.get(k) is False for k in ("enable_thinking", "thinking"))
    tail = prompt.rstrip()
    if any(tail.endswith(end) for end in getattr(cls, "ends", ()) or ()):
        thinking = False
    return thinking


def _prepare(state: ServerState, req: ChatCompletionRequest) -> Prepared:
    s = state.settings
    state.check_model(req.model)
    refuse_unsupported(req, chat=True)
    if not req.messages:
        raise APIError(400, "'messages' must contain at least one message.", param="messages")
    if req.tool_choice is not None and not req.tools:
        raise APIError(400, "'tool_choice' is only allowed when 'tools' are given.", param="tool_choice")
    if req.tools is not None and not req.tools:
        raise APIError(400, "'tools' must not be empty; omit it instead.", param="tools")
    structured, structured_param = structured_from_request(req)
    try:
        tools = normalize_tools([t.model_dump(exclude_none=True) for t in req.tools]) if req.tools else None
    except ValueError as err:
        raise APIError(400, str(err), param="tools") from err
    structured, structured_param, tool_parser = _tool_setup(state, req, tools, structured, structured_param)
    template = state.chat_template
    if req.chat_template is not None:
        if not s.trust_request_chat_template:
            raise APIError(400, "Request chat templates are refused unless the server runs with "
                                "--trust-request-chat-template.", param="chat_template")
        template = req.chat_template
    if not template:
        raise APIError(400, "The model has no chat template; start the server with --chat-template.",
                       param="messages")
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "'top_logprobs' requires 'logprobs': true.", param="top_logprobs")
    if req.max_completion_tokens is not None and req.max_completion_tokens < 1:
        raise APIError(400, f"max_completion_tokens must be at least 1, got {req.max_completion_tokens}.",
                       param="max_completion_tokens")
    tok = state.engine.tokenizer
    kwargs = {**s.default_chat_template_kwargs, **(req.chat_template_kwargs or {})}
    try:
        messages = normalize_messages([m.model_dump(exclude_none=True) for m in req.messages])
        text = render_chat(
            template, messages, tools=tools, add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            special_tokens={"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""}, **kwargs,
        )
    except (ChatTemplateError, ValueError) as err:
        raise APIError(400, str(err), param="messages") from err
    prompt_ids = tok.encode(text, add_special_tokens=False)
    if req.truncate_prompt_tokens is not None and req.truncate_prompt_tokens > 0:
        prompt_ids = prompt_ids[-req.truncate_prompt_tokens :]
    reasoning = None
    gate = None
    if s.reasoning_parser:
        cls = registry("reasoning_parsers").load(s.reasoning_parser)
        thinking = _thinking(cls, text, kwargs)
        reasoning = lambda: cls(tok, thinking=thinking)  # noqa: E731
        gate = reasoning() if thinking else None  # the constraint waits for the end of reasoning
    params = build_sampling_params(
        req, prompt_len=len(prompt_ids), max_model_len=state.engine.max_model_len,
        max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        defaults=getattr(state.engine, "generation_defaults", {}) or {}, max_logprobs=s.max_logprobs,
        structured=structured, reasoning_gate=gate,
    )
    return Prepared(prompt_ids, params, structured, structured_param, tool_parser, reasoning,
                    max_calls=1 if (tool_parser is not None and not req.parallel_tool_calls) else None)


def _usage(out: Any, prompt_len: int, completion: int, reasoning_tokens: int = 0) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_len, completion_tokens=completion, total_tokens=prompt_len + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=getattr(out, "num_cached_tokens", 0) or 0),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning_tokens),
    )


def _reasoning_tokens(tok: Any, reasoning: str | None) -> int:
    return len(tok.encode(reasoning, add_special_tokens=False)) if reasoning else 0


def _finish(reason: str | None, pipe: ChoicePipeline) -> str | None:
    """``tool_calls`` whenever a call was emitted and the model stopped by itself."""
    return "tool_calls" if reason == "stop" and pipe.called_tools else reason


def chat_route(state: ServerState):
    @post("/v1/chat/completions", status_code=200, summary="Create a chat completion")
    async def chat_completions(request: Request) -> Response | Stream:
        req = await read_body(request, ChatCompletionRequest, state.settings.max_request_body_bytes)
        state.check_capacity()
        prep = _prepare(state, req)
        await check_structured(state, prep.structured, prep.structured_param)
        prompt_ids, params = prep.prompt_ids, prep.params
        rid = req.request_id or new_id("chatcmpl")
        timer = RequestTimer()
        outputs = state.engine.generate(prompt_ids, params, rid, priority=req.priority, cache_salt=req.cache_salt)
        pipelines = {i: prep.pipeline() for i in range(params.n)}
        top_n = req.top_logprobs or 0
        tok = state.engine.tokenizer
        if req.stream:
            return Stream(_stream(state, req, rid, outputs, pipelines, timer, len(prompt_ids), top_n),
                          media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _whole(state, request, req, rid, outputs, pipelines, timer, len(prompt_ids), top_n, tok)

    return chat_completions


async def _whole(state, request, req, rid, outputs, pipelines, timer, prompt_len, top_n, tok) -> Response:
    state.in_flight += 1
    last = None
    finals: dict[int, Any] = {}

    async def consume():
        nonlocal last
        async for out, deltas in iterate_choices(outputs, timer):
            last = out
            for d in deltas:
                pipelines[d.index].feed(d.text, d.token_ids)
                if d.finish_reason is not None:
                    pipelines[d.index].finish()
                    finals[d.index] = d.output

    consumer = asyncio.ensure_future(consume())
    watcher = asyncio.ensure_future(watch_disconnect(request))
    try:
        done, _ = await asyncio.wait({consumer, watcher}, timeout=state.settings.request_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if consumer not in done:
            if watcher in done:
                return Response(b"", status_code=499)
            raise APIError(408, f"Request timed out after {state.settings.request_timeout} s.")
        consumer.result()
    finally:
        watcher.cancel()
        state.in_flight -= 1
        if not consumer.done():  # client gone, timed out, or this handler was cancelled (shutdown)
            consumer.cancel()
            state.engine.abort(rid)
            state.metrics.observe_aborted(e2e=timer.e2e())
    choices, completion, reasoning_tokens = [], 0, 0
    s = state.settings
    for i, pipe in sorted(pipelines.items()):
        comp = finals[i]
        res = pipe.result()
        completion += len(comp.token_ids)
        reasoning_tokens += _reasoning_tokens(tok, res.reasoning)
        lp = chat_logprobs(list(comp.token_ids), list(comp.logprobs), top_n, tok) if comp.logprobs is not None else None
        reasoning = res.reasoning if req.include_reasoning else None
        msg = ResponseMessage(content=res.content if res.content is not None else ("" if not res.tool_calls else None),
                              reasoning=reasoning, reasoning_content=reasoning if s.reasoning_content else None,
                              tool_calls=res.tool_calls or None)
        choices.append(ChatChoice(index=i, message=msg, logprobs=lp, finish_reason=_finish(comp.finish_reason, pipe),
                                  stop_reason=comp.stop_reason))
        state.metrics.observe_finished(
            prompt_tokens=prompt_len if i == 0 else 0, completion_tokens=len(comp.token_ids),
            finish_reason=comp.finish_reason or "abort", ttft=timer.ttft, e2e=timer.e2e(),
            queue_time=getattr(getattr(last, "metrics", None), "queue_time", None), itls=timer.gaps)
    usage = _usage(last, prompt_len, completion, reasoning_tokens)
    request.scope.setdefault("state", {})["usage"] = usage.model_dump()
    body = ChatCompletionResponse(id=rid, model=state.model_name, choices=choices, usage=usage)
    return Response(body.model_dump(exclude_none=False), media_type="application/json")


async def _stream(state, req, rid, outputs, pipelines, timer, prompt_len, top_n) -> AsyncIterator[bytes]:
    model, tok = state.model_name, state.engine.tokenizer
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    state.in_flight += 1
    completion, last, finished, reasoning_tokens = 0, None, False, 0
    show_reasoning, both_names = req.include_reasoning, state.settings.reasoning_content

    created = int(time.time())

    def chunk(index: int, delta: dict, finish=None, stop_reason=None, logprobs=None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs.model_dump() if logprobs else None,
                  "finish_reason": finish}
        if finish is not None:
            choice["stop_reason"] = stop_reason
        return sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [choice]})

    try:
        for i in pipelines:
            yield chunk(i, {"role": "assistant", "content": ""})
        async for out, deltas in iterate_choices(outputs, timer):
            last = out
            for d in deltas:
                pipe = pipelines[d.index]
                msg = pipe.feed(d.text, d.token_ids)
                lp = chat_logprobs(d.token_ids, d.logprobs, top_n, tok) if d.logprobs is not None else None
                if d.finish_reason is not None:
                    tail = pipe.finish()
                    if tail is not None:
                        msg = tail if msg is None else _join(msg, tail)
                if msg is not None and not show_reasoning:
                    msg.reasoning = None
                if msg is not None and (msg.content or msg.tool_calls or msg.reasoning):
                    yield chunk(d.index, _delta_dict(msg, both_names), logprobs=lp)
                elif lp is not None and lp.content:
                    yield chunk(d.index, {"content": ""}, logprobs=lp)
                if d.finish_reason is not None:
                    completion += len(d.output.token_ids)
                    reasoning_tokens += _reasoning_tokens(tok, pipe.result().reasoning)
                    yield chunk(d.index, {}, finish=_finish(d.finish_reason, pipe), stop_reason=d.stop_reason)
                    state.metrics.observe_finished(
                        prompt_tokens=prompt_len if d.index == 0 else 0, completion_tokens=len(d.output.token_ids),
                        finish_reason=d.finish_reason, ttft=timer.ttft, e2e=timer.e2e(),
                        queue_time=getattr(getattr(out, "metrics", None), "queue_time", None), itls=timer.gaps)
        finished = True
        if include_usage:
            usage = _usage(last, prompt_len, completion, reasoning_tokens)
            yield sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage.model_dump(exclude_none=True)})
        yield sse("[DONE]")
    except APIError as err:
        yield sse(error_body(err.status, err.message, param=err.param, code=err.code))
    except RequestRejectedError as err:
        yield sse(error_body(400, str(err)))
    except Exception as err:  # after the stream started the status is sent: one error event, then close
        if not isinstance(err, (asyncio.CancelledError, GeneratorExit)):
            yield sse(error_body(500, f"Internal error during generation: {type(err).__name__}: {err}"))
        else:
            raise
    finally:
        state.in_flight -= 1
        if not finished:
            state.engine.abort(rid)
            state.metrics.observe_aborted(e2e=timer.e2e())


def _delta_dict(msg, both_names: bool = True) -> dict:
    out: dict = {}
    if msg.reasoning:
        out["reasoning"] = msg.reasoning
        if both_names:
            out["reasoning_content"] = msg.reasoning
    if msg.content:
        out["content"] = msg.content
    if msg.tool_calls:
        out["tool_calls"] = [c.model_dump(exclude_none=True) for c in msg.tool_calls]
    return out


def _join(a, b):
    a.content = (a.content or "") + (b.content or "") or None
    a.tool_calls = [*a.tool_calls, *b.tool_calls]
    return a
