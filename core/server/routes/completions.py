"""``POST /v1/completions``: prompts as a string, strings, token ids or lists of token ids.

With ``echo`` the prompt comes back in front of each choice's text, and with ``echo`` and
``logprobs`` its tokens' logprobs come first in the logprobs object (the first token has none):
``{"echo": true, "logprobs": 1, "max_tokens": 0}`` is how lm-evaluation-harness scores text.
With ``return_token_ids`` (vLLM) each choice carries its ``token_ids`` and ``prompt_token_ids``
(streamed: each chunk's new ids, and the prompt's on the choice's first chunk).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from heron.protocol.common import CompletionLogprobs, PromptTokensDetails, UsageInfo
from heron.protocol.completions import CompletionChoice, CompletionRequest, CompletionResponse
from heron.server.errors import APIError
from heron.server.logprobs import completion_logprobs, echo_logprobs, prompt_logprobs
from heron.server.lora import resolve_model
from heron.server.requests import Event, Job, RequestContext, sse
from heron.server.sampling import (
    build_sampling_params,
    check_request_limits,
    check_structured,
    out_of_vocabulary,
    refuse_unsupported,
    structured_from_request,
    truncate_prompt,
)
from heron.server.state import ServerState, read_body
from heron.server.vllm_fields import StreamUsage, check_vllm_fields, tokens_as_ids, usage_body

__all__ = ("completions_route",)


def _items(req: CompletionRequest) -> list[Any]:
    p = req.prompt
    if isinstance(p, str):
        items: list[Any] = [p]
    elif p and all(isinstance(x, int) for x in p):
        items = [p]
    else:
        items = list(p)
    if not items:
        raise APIError(400, "'prompt' must not be empty.", param="prompt")
    return items


#: vLLM's wording for a prompt without a single token
_EMPTY = "The decoder prompt cannot be empty: give at least one token."


def _token_prompt(item: list[int], vocab: int) -> list[int]:
    if not item:
        raise APIError(400, _EMPTY, param="prompt")
    for t in item:
        if not isinstance(t, int) or not 0 <= t < vocab:
            raise out_of_vocabulary("prompt", t, vocab)
    return list(item)


def _prepare(state: ServerState, req: CompletionRequest, items: list[Any], structured: Any) -> list[Job]:
    """Tokenize every prompt and build its params (in a worker thread: prompts can be long)."""
    tok = state.engine.tokenizer
    vocab = state.vocab_size
    # echo + logprobs: the prompt's logprobs are part of the answer
    scoring = req.echo and req.logprobs is not None
    jobs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            text, ids = item, tok.encode(item, add_special_tokens=req.add_special_tokens)
            if not ids:
                raise APIError(400, _EMPTY, param="prompt")
        else:
            ids = _token_prompt(item, vocab)
            text = tok.decode(ids)
        ids = truncate_prompt(ids, req, state.engine.max_model_len)
        params = build_sampling_params(
            req, prompt_len=len(ids), max_model_len=state.engine.max_model_len,
            max_tokens=req.max_tokens if req.max_tokens is not None else 16, logprobs=req.logprobs,
            defaults=getattr(state.engine, "generation_defaults", {}) or {},
            max_logprobs=state.settings.max_logprobs, structured=structured, vocab_size=vocab,
            allow_zero_tokens=True)
        if scoring:
            params = params.clone(prompt_logprobs=max(params.prompt_logprobs or 0, req.logprobs))
        jobs.append(Job(i, text, ids, params))
    return jobs


def completions_route(state: ServerState):
    @post("/v1/completions", status_code=200, summary="Create a completion")
    async def completions(request: Request) -> Response | Stream:
        s = state.settings
        req = await read_body(request, CompletionRequest, s.max_request_body_bytes, s.max_json_depth)
        lora = await resolve_model(state, req.model)
        refuse_unsupported(req, chat=False)
        check_vllm_fields(req)
        items = _items(req)
        check_request_limits(s, req, num_prompts=len(items))
        ctx = RequestContext.open(state, request, req, prefix="cmpl", num_seqs=len(items) * req.n, lora=lora)
        with ctx.guard():
            structured, structured_param = structured_from_request(req)
            await check_structured(state, structured, structured_param)
            jobs = await ctx.off_loop(_prepare, state, req, items, structured)
        ctx.submit(jobs)
        answer = _Answer(ctx, req)
        if req.stream:
            return ctx.stream(answer.chunks())
        return await answer.whole()

    return completions


@dataclass
class _Choice:
    job: Job
    index: int
    texts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    prompt_logprobs: list[Any] | None = None
    tokens: int = 0
    sent_chars: int = 0  # output characters already streamed (for text_offset)
    started: bool = False
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class _Answer:
    def __init__(self, ctx: RequestContext, req: CompletionRequest) -> None:
        self.ctx, self.req = ctx, req
        self.tok = ctx.state.engine.tokenizer
        self.choices: dict[int, _Choice] = {}
        self.cached = 0
        self.want_ids = bool(req.return_token_ids)
        self.as_ids = tokens_as_ids(req, ctx.state.settings)

    def _see(self, ev: Event) -> _Choice:
        key, d = ev.choice, ev.delta
        c = self.choices.get(key)
        if c is None:
            c = self.choices[key] = _Choice(ev.job, key)
        c.tokens = d.num_output_tokens
        if getattr(ev.output, "prompt_logprobs", None) and c.prompt_logprobs is None:
            c.prompt_logprobs = list(ev.output.prompt_logprobs)
        self.cached = max(self.cached, getattr(ev.output, "num_cached_tokens", 0) or 0)
        if d.finish_reason is not None:
            c.finish_reason, c.stop_reason = d.finish_reason, d.stop_reason
        return c

    def _usage(self) -> UsageInfo:
        prompt = sum(len(job.prompt_ids) for job in self.ctx.jobs)
        completion = sum(c.tokens for c in self.choices.values())
        return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                         prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached))

    def _logprobs(self, c: _Choice, token_ids: list[int], steps: list[Any], offset: int,
                  with_prompt: bool) -> CompletionLogprobs:
        top_n = self.req.logprobs or 0
        out = completion_logprobs(token_ids, steps, top_n, self.tok, offset, as_ids=self.as_ids)
        if not with_prompt:
            return out
        head = echo_logprobs(c.job.prompt_ids, c.prompt_logprobs, top_n, self.tok, as_ids=self.as_ids)
        return CompletionLogprobs(text_offset=head.text_offset + out.text_offset,
                                  token_logprobs=head.token_logprobs + out.token_logprobs,
                                  tokens=head.tokens + out.tokens, top_logprobs=head.top_logprobs + out.top_logprobs)

    def _prompt_logprobs(self, c: _Choice) -> list[Any] | None:
        if self.req.prompt_logprobs is None:
            return None
        return prompt_logprobs(c.prompt_logprobs, self.tok)

    # -- whole ------------------------------------------------------------------------------

    async def whole(self) -> Response:
        want_lp = self.req.logprobs is not None

        def handle(ev: Event) -> None:
            c, d = self._see(ev), ev.delta
            c.texts.append(d.text)
            if want_lp or self.want_ids:
                c.token_ids.extend(d.token_ids)
            if want_lp and d.logprobs is not None:
                c.logprobs.extend(d.logprobs)

        gone = await self.ctx.collect(handle)
        if gone is not None:
            return gone
        body = await self.ctx.off_loop(self._body)
        self.ctx.http.scope.setdefault("state", {})["usage"] = body["usage"]
        return Response(body, media_type="application/json")

    def _body(self) -> dict[str, Any]:
        choices = []
        for key in sorted(self.choices):
            c = self.choices[key]
            echo = c.job.text if self.req.echo and c.job.text is not None else ""
            lp = None
            if self.req.logprobs is not None:
                lp = self._logprobs(c, c.token_ids, c.logprobs, len(echo), with_prompt=self.req.echo)
            choices.append(CompletionChoice(
                index=key, text=echo + "".join(c.texts), logprobs=lp, finish_reason=c.finish_reason,
                stop_reason=c.stop_reason, prompt_logprobs=self._prompt_logprobs(c),
                token_ids=c.token_ids if self.want_ids else None,
                prompt_token_ids=c.job.prompt_ids if self.want_ids else None))
        usage = self._usage()
        body = CompletionResponse(id=self.ctx.id, created=self.ctx.created, model=self.ctx.model_name,
                                  choices=choices, usage=usage).model_dump()
        body["usage"] = usage_body(usage)
        return body

    # -- streamed ---------------------------------------------------------------------------

    def _payload(self, choices: list[dict], usage: dict | None = None) -> bytes:
        body = {"id": self.ctx.id, "object": "text_completion", "created": self.ctx.created,
                "model": self.ctx.model_name, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return sse(body)

    def _usage_now(self) -> dict[str, int]:
        u = self._usage()
        return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens}

    def _choice_chunk(self, ev: Event) -> dict[str, Any]:
        """One streamed choice: new text (after the prompt on the first chunk with ``echo``), its
        logprobs (an object on every chunk when asked for), ids with ``return_token_ids``."""
        c, d = self._see(ev), ev.delta
        first = not c.started
        echo = c.job.text if self.req.echo and first and c.job.text is not None else ""
        lp = None
        if self.req.logprobs is not None:
            offset = (len(c.job.text or "") if self.req.echo else 0) + c.sent_chars
            lp = self._logprobs(c, d.token_ids, list(d.logprobs or []), offset, with_prompt=self.req.echo and first)
        c.started = True
        c.sent_chars += len(d.text)
        choice = CompletionChoice(index=c.index, text=echo + d.text, logprobs=lp, finish_reason=d.finish_reason,
                                  stop_reason=d.stop_reason)
        out = choice.model_dump(exclude={"prompt_logprobs", "token_ids", "prompt_token_ids"})
        if self.want_ids:
            out["token_ids"] = list(d.token_ids)
            if first:
                out["prompt_token_ids"] = c.job.prompt_ids
        return out

    async def chunks(self) -> AsyncIterator[bytes]:
        usage = StreamUsage.of(self.req, self.ctx.state.settings)
        async for ev in self.ctx.events():
            choice = self._choice_chunk(ev)
            yield self._payload([choice], self._usage_now() if usage.continuous else None)
        if usage.final:
            yield self._payload([], usage_body(self._usage()))
        yield sse("[DONE]")
