"""``POST /v1/chat/completions``: prepare, generate, parse, and answer whole or as SSE.

The answer follows OpenAI's schemas (``refusal`` keys, ``tool_calls: []`` when no tool was
called, no null ``system_fingerprint``) plus vLLM's extras: ``stop_reason``, ``reasoning``,
``prompt_logprobs`` and, with ``return_token_ids``, ``prompt_token_ids`` (on each choice's first
chunk when streamed) and each choice's ``token_ids``. A streamed choice's last chunk carries its
last text together with ``finish_reason``, so with ``continuous_usage_stats`` every chunk's usage
counts the tokens it brings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from heron.chat import ChoicePipeline
from heron.protocol.chat import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ResponseMessage,
)
from heron.protocol.common import CompletionTokensDetails, PromptTokensDetails, UsageInfo
from heron.server.chat_request import PreparedChat, prepare_chat
from heron.server.logprobs import chat_logprobs, prompt_logprobs
from heron.server.lora import resolve_model
from heron.server.requests import Event, Job, RequestContext, sse
from heron.server.sampling import check_request_limits, check_structured, refuse_unsupported
from heron.server.state import ServerState, read_body
from heron.server.vllm_fields import StreamUsage, check_vllm_fields, tokens_as_ids, usage_body

__all__ = ("chat_route",)


def chat_route(state: ServerState):
    @post("/v1/chat/completions", status_code=200, summary="Create a chat completion")
    async def chat_completions(request: Request) -> Response | Stream:
        s = state.settings
        req = await read_body(request, ChatCompletionRequest, s.max_request_body_bytes, s.max_json_depth)
        lora = await resolve_model(state, req.model)
        refuse_unsupported(req, chat=True)
        check_vllm_fields(req)
        check_request_limits(s, req)
        ctx = RequestContext.open(state, request, req, prefix="chatcmpl", num_seqs=req.n, lora=lora)
        with ctx.guard():
            prep = await ctx.off_loop(prepare_chat, state, req)
            await check_structured(state, prep.structured, prep.structured_param)
        ctx.submit([Job(0, None, prep.prompt_ids, prep.params)])
        answer = _Answer(ctx, req, prep)
        if req.stream:
            return ctx.stream(answer.chunks())
        return await answer.whole()

    return chat_completions


@dataclass
class _Choice:
    pipe: ChoicePipeline
    tokens: int = 0
    token_ids: list[int] = field(default_factory=list)  # kept only when logprobs or token ids are asked for
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finish(self) -> str | None:
        """``tool_calls`` whenever a call was emitted and the model stopped by itself."""
        return "tool_calls" if self.finish_reason == "stop" and self.pipe.called_tools else self.finish_reason


class _Answer:
    """One chat request's answer, assembled from the engine's deltas."""

    def __init__(self, ctx: RequestContext, req: ChatCompletionRequest, prep: PreparedChat) -> None:
        self.ctx, self.req, self.prep = ctx, req, prep
        self.tok = ctx.state.engine.tokenizer
        self.choices = {i: _Choice(prep.pipeline()) for i in range(prep.params.n)}
        self.prompt_len = len(prep.prompt_ids)
        self.cached = 0
        self.prompt_logprobs: list[Any] | None = None
        self.want_ids = bool(req.return_token_ids)
        self.as_ids = tokens_as_ids(req, ctx.state.settings)
        self.top_n = req.top_logprobs or 0

    def _see(self, ev: Event) -> _Choice:
        c, d = self.choices[ev.delta.index], ev.delta
        c.tokens = d.num_output_tokens
        self.cached = max(self.cached, getattr(ev.output, "num_cached_tokens", 0) or 0)
        if getattr(ev.output, "prompt_logprobs", None) and self.prompt_logprobs is None:
            self.prompt_logprobs = list(ev.output.prompt_logprobs)
        if d.finish_reason is not None:
            c.finish_reason, c.stop_reason = d.finish_reason, d.stop_reason
        return c

    def usage(self) -> UsageInfo:
        completion = sum(c.tokens for c in self.choices.values())
        reasoning = sum(self._reasoning_tokens(c) for c in self.choices.values())
        return UsageInfo(prompt_tokens=self.prompt_len, completion_tokens=completion,
                         total_tokens=self.prompt_len + completion,
                         prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached),
                         completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning))

    def _reasoning_tokens(self, c: _Choice) -> int:
        text = c.pipe.result().reasoning
        return len(self.tok.encode(text, add_special_tokens=False)) if text else 0

    def _logprobs(self, token_ids: list[int], steps: list[Any] | None) -> Any:
        return chat_logprobs(token_ids, steps or [], self.top_n, self.tok, self.as_ids)

    # -- whole ------------------------------------------------------------------------------

    async def whole(self) -> Response:
        want_lp, keep_ids = self.req.logprobs, self.req.logprobs or self.want_ids

        def handle(ev: Event) -> None:
            c, d = self._see(ev), ev.delta
            c.pipe.feed(d.text, d.token_ids)
            if keep_ids:
                c.token_ids.extend(d.token_ids)
            if want_lp and d.logprobs is not None:
                c.logprobs.extend(d.logprobs)
            if d.finish_reason is not None:
                c.pipe.finish()

        gone = await self.ctx.collect(handle)
        if gone is not None:
            return gone
        body = await self.ctx.off_loop(self._body)  # decoding logprobs of long answers takes time
        self.ctx.http.scope.setdefault("state", {})["usage"] = body["usage"]
        return Response(body, media_type="application/json")

    def _body(self) -> dict[str, Any]:
        show, both = self.req.include_reasoning, self.ctx.state.settings.reasoning_content
        choices = []
        for i, c in sorted(self.choices.items()):
            res = c.pipe.result()
            content = res.content
            if self.prep.echo:
                content = self.prep.echo + (content or "")
            reasoning = res.reasoning if show else None
            msg = ResponseMessage(role=self.prep.role,
                                  content=content if content is not None else ("" if not res.tool_calls else None),
                                  reasoning=reasoning, reasoning_content=reasoning if both else None,
                                  tool_calls=res.tool_calls)
            lp = self._logprobs(c.token_ids, c.logprobs) if self.req.logprobs else None
            choices.append(ChatChoice(index=i, message=msg, logprobs=lp, finish_reason=c.finish(),
                                      stop_reason=c.stop_reason, token_ids=c.token_ids if self.want_ids else None))
        plp = prompt_logprobs(self.prompt_logprobs, self.tok) if self.req.prompt_logprobs is not None else None
        usage = self.usage()
        body = ChatCompletionResponse(id=self.ctx.id, created=self.ctx.created, model=self.ctx.model_name,
                                      choices=choices, usage=usage, service_tier=self.req.service_tier,
                                      prompt_logprobs=plp,
                                      prompt_token_ids=self.prep.prompt_ids if self.want_ids else None).model_dump()
        body["usage"] = usage_body(usage)
        return body

    # -- streamed ---------------------------------------------------------------------------

    def _chunk(self, choice: dict[str, Any], usage: StreamUsage, **top: Any) -> bytes:
        payload = {"id": self.ctx.id, "object": "chat.completion.chunk", "created": self.ctx.created,
                   "model": self.ctx.model_name, "choices": [choice], **top}
        if self.req.service_tier is not None:
            payload["service_tier"] = self.req.service_tier
        if usage.continuous:
            completion = sum(c.tokens for c in self.choices.values())
            payload["usage"] = {"prompt_tokens": self.prompt_len, "completion_tokens": completion,
                                "total_tokens": self.prompt_len + completion}
        return sse(payload)

    def _first(self, index: int, usage: StreamUsage) -> bytes:
        choice = {"index": index, "delta": {"role": self.prep.role, "content": self.prep.echo}, "logprobs": None,
                  "finish_reason": None}
        top = {"prompt_token_ids": self.prep.prompt_ids} if self.want_ids else {}
        return self._chunk(choice, usage, **top)

    def _event(self, ev: Event, usage: StreamUsage) -> bytes | None:
        """The chunk for one engine delta of one choice, or None when it has nothing to send."""
        c, d = self._see(ev), ev.delta
        show, both = self.req.include_reasoning, self.ctx.state.settings.reasoning_content
        msg = c.pipe.feed(d.text, d.token_ids)
        lp = self._logprobs(d.token_ids, d.logprobs) if d.logprobs is not None else None
        if d.finish_reason is not None:
            tail = c.pipe.finish()
            if tail is not None:
                msg = tail if msg is None else _join(msg, tail)
        if msg is not None and not show:
            msg.reasoning = None
        delta = _delta_dict(msg, both) if msg is not None else {}
        ids = self.want_ids and bool(d.token_ids)
        if not delta and d.finish_reason is None:
            if not (lp is not None and lp.content) and not ids:
                return None
            delta = {"content": ""}
        choice: dict[str, Any] = {"index": d.index, "delta": delta,
                                  "logprobs": lp.model_dump() if lp is not None else None,
                                  "finish_reason": c.finish() if d.finish_reason is not None else None}
        if d.finish_reason is not None:
            choice["stop_reason"] = d.stop_reason
        if self.want_ids:
            choice["token_ids"] = list(d.token_ids)
        return self._chunk(choice, usage)

    async def chunks(self) -> AsyncIterator[bytes]:
        usage = StreamUsage.of(self.req, self.ctx.state.settings)
        for i in self.choices:
            yield self._first(i, usage)
        async for ev in self.ctx.events():
            chunk = self._event(ev, usage)
            if chunk is not None:
                yield chunk
        if usage.final:
            final = {"id": self.ctx.id, "object": "chat.completion.chunk", "created": self.ctx.created,
                     "model": self.ctx.model_name, "choices": [], "usage": usage_body(self.usage())}
            if self.req.service_tier is not None:
                final["service_tier"] = self.req.service_tier
            yield sse(final)
        yield sse("[DONE]")


def _delta_dict(msg: Any, both_names: bool = True) -> dict:
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


def _join(a: Any, b: Any) -> Any:
    a.content = (a.content or "") + (b.content or "") or None
    a.reasoning = (a.reasoning or "") + (b.reasoning or "") or None
    a.tool_calls = [*a.tool_calls, *b.tool_calls]
    return a
