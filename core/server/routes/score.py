"""``POST /score`` (and ``/v1/score``) and ``POST /rerank`` (and ``/v1/rerank``, ``/v2/rerank``).

A cross-encoder (a classifier with one label) reads each pair as one input (``text_1 [SEP] text_2``)
and its sigmoid is the score; an embedding model embeds every distinct text once and scores a pair
with the cosine of its two embeddings. Pairs follow vLLM: one ``text_1`` against every ``text_2``
(1:1, 1:N), or ``text_1[i]`` against ``text_2[i]`` (N:N).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post

from heron.protocol.common import UsageInfo
from heron.protocol.pooling import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    ScoreData,
    ScoreRequest,
    ScoreResponse,
)
from heron.server.errors import APIError
from heron.server.lora import check_pooling_model
from heron.server.requests import Job, RequestContext
from heron.server.routes.pooling import (
    check_count,
    input_limit,
    model_info,
    pool,
    respond,
    tokenize,
    usage,
)
from heron.server.state import ServerState, read_body

__all__ = ("score_routes",)


def _pairs(text_1: str | list[str], text_2: str | list[str]) -> list[tuple[str, str]]:
    a = [text_1] if isinstance(text_1, str) else list(text_1)
    b = [text_2] if isinstance(text_2, str) else list(text_2)
    if not a:
        raise APIError(400, "'text_1' must not be empty.", param="text_1")
    if not b:
        raise APIError(400, "'text_2' must not be empty.", param="text_2")
    if len(a) == 1:
        return [(a[0], x) for x in b]
    if len(a) != len(b):
        raise APIError(400, f"text_1 and text_2 must pair 1:1, 1:N or N:N; got {len(a)} and {len(b)} texts.",
                       param="text_2")
    return list(zip(a, b, strict=True))


def _seqs(pairs: list[tuple[str, str]]) -> int:
    """Sequences to admit: one per pair (cross-encoder) or per distinct text (embeddings), whichever is more."""
    return max(len(pairs), len({t for pair in pairs for t in pair}))


def _prepare(state: ServerState, pairs: list[tuple[str, str]], cross: bool, limit: int) -> tuple[list[Job], Any]:
    """Jobs and how to read scores from their results: one job per pair, or per distinct text."""
    from heron.engine.pooling_params import PoolingParams

    if cross:
        params = PoolingParams(task="classify")
        jobs = [Job(i, None, tokenize(state, a, limit, pair=b, param="text_2"), params)
                for i, (a, b) in enumerate(pairs)]
        return jobs, None
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    params = PoolingParams(task="embed", normalize=True)
    jobs = [Job(i, t, tokenize(state, t, limit, param="text_2"), params) for i, t in enumerate(texts)]
    return jobs, {t: i for i, t in enumerate(texts)}


async def _score(state: ServerState, ctx: RequestContext, pairs: list[tuple[str, str]],
                 truncate: int | None) -> tuple[list[float], list[Job]] | Response:
    """Each pair's score, in pair order, and the jobs that made them (for usage)."""
    with ctx.guard():
        info = model_info(state)
        info.require("score")
        cross = "classify" in info.tasks and info.num_labels == 1 and info.convert == "classify"
        jobs, where = await ctx.off_loop(_prepare, state, pairs, cross, input_limit(info, truncate))
    results = await pool(ctx, jobs)
    if isinstance(results, Response):
        return results
    if where is None:
        return [float(r.reshape(-1)[0]) for r in results], jobs
    return [_cosine(results[where[a]], results[where[b]]) for a, b in pairs], jobs


def _cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two embeddings ([H] tensors)."""
    a, b = a.reshape(-1).float(), b.reshape(-1).float()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))


def score_routes(state: ServerState) -> list:
    s = state.settings

    @post(["/score", "/v1/score"], status_code=200, summary="Score text pairs (cross-encoder or cosine)")
    async def score(request: Request) -> Response:
        req = await read_body(request, ScoreRequest, s.max_request_body_bytes, s.max_json_depth)
        check_pooling_model(state, req.model)
        pairs = _pairs(req.text_1, req.text_2)
        check_count(s, len(pairs), "text_2")
        ctx = RequestContext.open(state, request, req, prefix="score", num_seqs=_seqs(pairs), runner="pooling")
        done = await _score(state, ctx, pairs, req.truncate_prompt_tokens)
        if isinstance(done, Response):
            return done
        scores, jobs = done
        data = [ScoreData(index=i, score=v) for i, v in enumerate(scores)]
        return respond(ctx, ScoreResponse(id=ctx.id, created=ctx.created, model=state.model_name, data=data,
                                          usage=UsageInfo()), jobs)

    @post(["/rerank", "/v1/rerank", "/v2/rerank"], status_code=200, summary="Rerank documents by relevance")
    async def rerank(request: Request) -> Response:
        req = await read_body(request, RerankRequest, s.max_request_body_bytes, s.max_json_depth)
        check_pooling_model(state, req.model)
        if not req.documents:
            raise APIError(400, "'documents' must not be empty.", param="documents")
        if req.top_n is not None and req.top_n < 0:
            raise APIError(400, f"top_n must be 0 (all) or more, got {req.top_n}.", param="top_n")
        check_count(s, len(req.documents), "documents")
        pairs = [(req.query, d) for d in req.documents]
        ctx = RequestContext.open(state, request, req, prefix="rerank", num_seqs=_seqs(pairs), runner="pooling")
        done = await _score(state, ctx, pairs, req.truncate_prompt_tokens)
        if isinstance(done, Response):
            return done
        scores, jobs = done
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: req.top_n or None]
        results = [RerankResult(index=i, relevance_score=scores[i],
                                document=RerankDocument(text=req.documents[i]) if req.return_documents else None)
                   for i in order]
        body = RerankResponse(id=ctx.id, model=state.model_name, results=results,
                              usage=RerankUsage(total_tokens=usage(jobs)["total_tokens"]))
        ctx.http.scope.setdefault("state", {})["usage"] = usage(jobs)
        return Response(body.model_dump(exclude_none=True), media_type="application/json")

    return [score, rerank]
