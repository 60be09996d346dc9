"""``POST /v1/embeddings`` (OpenAI's shape) and ``POST /pooling`` (vLLM's raw pooled tensors).

Both take ``input`` (a string, strings, token ids or lists of token ids) or vLLM's chat-style
``messages`` (rendered with the chat template, as chat does). Embeddings come as floats or, with
``"encoding_format": "base64"``, as base64 of little-endian float32 bytes; ``dimensions`` keeps the
first values of a Matryoshka model's embedding (then normalises).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post

from heron.chat import ChatTemplateError, normalize_messages, render_chat
from heron.protocol.common import UsageInfo
from heron.protocol.pooling import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    PoolingData,
    PoolingRequest,
    PoolingResponse,
)
from heron.server.errors import APIError
from heron.server.lora import check_pooling_model
from heron.server.requests import Job, RequestContext
from heron.server.routes.pooling import (
    PoolingModelInfo,
    check_count,
    encode_floats,
    input_items,
    input_limit,
    make_jobs,
    model_info,
    pool,
    respond,
)
from heron.server.state import ServerState, read_body

__all__ = ("embeddings_routes",)


def _items(req: EmbeddingRequest) -> list[Any] | None:
    """The inputs, or None for a ``messages`` request (one input, rendered later)."""
    if (req.input is None) == (req.messages is None):
        raise APIError(400, "Give exactly one of 'input' or 'messages'.", param="input")
    if req.messages is not None:
        if not req.messages:
            raise APIError(400, "'messages' must contain at least one message.", param="messages")
        return None
    return input_items(req.input, "input")


def _render(state: ServerState, req: EmbeddingRequest) -> str:
    """``messages`` as the chat template renders them (no generation prompt unless asked)."""
    if req.chat_template is not None and not state.settings.trust_request_chat_template:
        raise APIError(400, "Request chat templates are refused unless the server runs with "
                            "--trust-request-chat-template.", param="chat_template")
    template = req.chat_template if req.chat_template is not None else state.chat_template
    if not template:
        raise APIError(400, "The model has no chat template; start the server with --chat-template.",
                       param="messages")
    tok = state.engine.tokenizer
    kwargs = {**state.settings.default_chat_template_kwargs, **(req.chat_template_kwargs or {})}
    try:
        return render_chat(template, normalize_messages(req.messages),
                           add_generation_prompt=req.add_generation_prompt,
                           continue_final_message=req.continue_final_message,
                           special_tokens={"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""},
                           limits=state.render_limits, **kwargs)
    except (ChatTemplateError, ValueError) as err:
        raise APIError(400, str(err), param="chat_template" if req.chat_template is not None else "messages") from err


def _check_dimensions(info: PoolingModelInfo, dims: int | None) -> None:
    if dims is None:
        return
    if dims < 1:
        raise APIError(400, f"dimensions must be at least 1, got {dims}.", param="dimensions")
    if info.matryoshka is None:
        raise APIError(400, "This model does not support Matryoshka representations: 'dimensions' would give "
                            "poor embeddings; omit it.", param="dimensions")
    if info.matryoshka and dims not in info.matryoshka:
        raise APIError(400, f"dimensions {dims} is not one this model was trained for: "
                            f"{', '.join(map(str, info.matryoshka))}.", param="dimensions")
    if info.hidden_size is not None and dims > info.hidden_size:
        raise APIError(400, f"dimensions ({dims}) exceeds the model's embedding size ({info.hidden_size}).",
                       param="dimensions")


def _prepare(state: ServerState, req: EmbeddingRequest, items: list[Any] | None, params: Any,
             limit: int) -> list[Job]:
    """Render (messages) and tokenize every input, in a worker thread."""
    if items is None:
        special = bool(req.add_special_tokens)  # the template already wrote the special tokens
        return make_jobs(state, [_render(state, req)], params, limit, add_special_tokens=special, param="messages")
    special = req.add_special_tokens is None or req.add_special_tokens
    return make_jobs(state, items, params, limit, add_special_tokens=special)


async def _run(state: ServerState, request: Request, model: type[EmbeddingRequest], prefix: str,
               task: str | None) -> tuple[Any, RequestContext, list[Job], list[Any]] | Response:
    """Everything the two routes share: parse, admit, prepare, pool."""
    from heron.engine.pooling_params import PoolingParams

    s = state.settings
    req = await read_body(request, model, s.max_request_body_bytes, s.max_json_depth)
    check_pooling_model(state, req.model)
    items = _items(req)
    check_count(s, len(items or [None]), "input")
    ctx = RequestContext.open(state, request, req, prefix=prefix, num_seqs=len(items or [None]), runner="pooling")
    with ctx.guard():
        info = model_info(state)
        task = task or getattr(req, "task", None) or ("encode" if "encode" in info.tasks else info.tasks[0])
        info.require(task)
        if task != "classify":
            _check_dimensions(info, req.dimensions)
        elif req.dimensions is not None:
            raise APIError(400, "dimensions applies to embeddings, not to classification.", param="dimensions")
        params = PoolingParams(task=task, normalize=req.normalize, dimensions=req.dimensions)
        jobs = await ctx.off_loop(_prepare, state, req, items, params, input_limit(info, req.truncate_prompt_tokens))
    results = await pool(ctx, jobs)
    if isinstance(results, Response):
        return results
    return req, ctx, jobs, results


def embeddings_routes(state: ServerState) -> list:
    @post("/v1/embeddings", status_code=200, summary="Create embeddings")
    async def embeddings(request: Request) -> Response:
        done = await _run(state, request, EmbeddingRequest, "embd", "embed")
        if isinstance(done, Response):
            return done
        req, ctx, jobs, results = done
        data = [EmbeddingData(index=job.index, embedding=encode_floats(r.reshape(-1), req.encoding_format))
                for job, r in zip(jobs, results, strict=True)]
        return respond(ctx, EmbeddingResponse(id=ctx.id, created=ctx.created, model=state.model_name, data=data,
                                              usage=UsageInfo()), jobs)

    @post("/pooling", status_code=200, summary="Pool prompts: the model's raw pooled output")
    async def pooling(request: Request) -> Response:
        done = await _run(state, request, PoolingRequest, "pool", None)
        if isinstance(done, Response):
            return done
        req, ctx, jobs, results = done
        data = [PoolingData(index=job.index, data=encode_floats(r, req.encoding_format))
                for job, r in zip(jobs, results, strict=True)]
        return respond(ctx, PoolingResponse(id=ctx.id, created=ctx.created, model=state.model_name, data=data,
                                            usage=UsageInfo()), jobs)

    return [embeddings, pooling]
