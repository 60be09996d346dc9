"""The pooling routes' shared steps, and ``POST /classify``.

Every pooling route (embeddings, pooling, classify, score, rerank) reads like a recipe::

    req = await read_body(http, EmbeddingRequest, ...)                    # parse
    items = input_items(req.input, "input"); check_count(s, len(items))   # validate
    ctx = RequestContext.open(state, http, req, prefix="embd", num_seqs=len(items), runner="pooling")
    with ctx.guard():
        info = model_info(state)                                          # what the model serves
        jobs = await ctx.off_loop(make_jobs, state, items, params, limit) # tokenize + truncate
    results = await pool(ctx, jobs)                                       # submit, collect tensors

Inputs longer than the model's longest input (sentence-transformers' ``max_seq_length``, else the
context length) are truncated to it, as sentence-transformers does; ``truncate_prompt_tokens``
keeps fewer. Text is cut by the tokenizer (its ``truncation_side``; special tokens are kept).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, post
from pydantic import BaseModel

from heron.protocol.common import UsageInfo
from heron.protocol.pooling import ClassificationData, ClassificationRequest, ClassificationResponse
from heron.server.errors import APIError
from heron.server.lora import check_pooling_model
from heron.server.requests import Event, Job, RequestContext, served_runner
from heron.server.sampling import out_of_vocabulary
from heron.server.state import ServerState, read_body

__all__ = (
    "PoolingModelInfo",
    "capabilities",
    "check_count",
    "classify_route",
    "encode_floats",
    "input_items",
    "input_limit",
    "make_jobs",
    "model_info",
    "pool",
    "respond",
    "usage",
)

#: route -> the task it needs (the model card lists the tasks a model serves)
_TASK_ROUTES = {"embed": "/v1/embeddings", "classify": "/classify", "encode": "/pooling", "score": "/score, /rerank"}


@dataclass(slots=True)
class PoolingModelInfo:
    """What the served pooling model does, read from the engine."""

    tasks: tuple[str, ...]  # of "embed", "classify", "encode"
    convert: str  # "embed" or "classify"
    max_model_len: int
    max_seq_length: int | None
    matryoshka: list[int] | None  # None: `dimensions` refused; []: any size up to hidden_size
    hidden_size: int | None
    labels: dict[int, str] = field(default_factory=dict)
    num_labels: int = 0

    @property
    def max_input(self) -> int:
        """Inputs are truncated to this many tokens by default."""
        return min(self.max_seq_length or self.max_model_len, self.max_model_len)

    @property
    def scores(self) -> bool:
        """Scores pairs: a cross-encoder (one label) or an embedding model (cosine)."""
        return "embed" in self.tasks or ("classify" in self.tasks and self.num_labels == 1)

    def require(self, task: str) -> None:
        """400 (param ``model``) unless the model serves ``task``."""
        ok = self.scores if task == "score" else task in self.tasks
        if not ok:
            raise APIError(400, f"This model serves {', '.join(capabilities_of(self))}, not {task} "
                                f"({_TASK_ROUTES.get(task, task)}).", param="model", code="unsupported_task")


def _find(engine: Any, name: str) -> Any:
    """An attribute of the engine client, or of the engine it drives."""
    for obj in (engine, getattr(engine, "engine", None)):
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def model_info(state: ServerState) -> PoolingModelInfo:
    """What the pooling model served by ``state``'s engine does."""
    engine = state.require_engine()
    setup = _find(engine, "pooling")  # heron.engine PoolingSetup, when the engine exposes it
    pooler = _find(engine, "pooler") or getattr(setup, "pooler", None)
    convert = getattr(pooler, "convert", "embed")
    tasks = _find(engine, "supported_tasks") or getattr(setup, "supported_tasks", None)
    tasks = tuple(tasks) if tasks else (("classify",) if convert == "classify" else ("embed", "encode"))
    hf = _find(engine, "hf_config") or getattr(_find(engine, "checkpoint"), "hf_config", None)
    hidden = _find(engine, "hidden_size") or getattr(setup, "hidden_size", None) or getattr(hf, "hidden_size", None)
    id2label = {int(k): str(v) for k, v in (getattr(hf, "id2label", None) or {}).items()}
    num_labels = int(_find(engine, "num_labels") or getattr(hf, "num_labels", None) or len(id2label))
    return PoolingModelInfo(tasks, convert, engine.max_model_len, getattr(pooler, "max_seq_length", None),
                            getattr(pooler, "matryoshka_dimensions", None), hidden, id2label, num_labels)


def capabilities_of(info: PoolingModelInfo) -> list[str]:
    return [*info.tasks, *(("score",) if info.scores else ())]


def capabilities(state: ServerState) -> list[str]:
    """What a model card lists: ``generate``, or the pooling tasks (embed, classify, encode, score)."""
    if served_runner(state.engine) != "pooling":
        return ["generate"]
    return capabilities_of(model_info(state))


def input_items(value: Any, param: str) -> list[str | list[int]]:
    """A string, strings, token ids or lists of token ids as a list of inputs (empty: 400)."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(x, int) for x in value):
        items = [value]
    else:
        items = list(value or [])
    if not items:
        raise APIError(400, f"'{param}' must not be empty.", param=param)
    return items


def check_count(settings: Any, count: int, param: str) -> None:
    """At most ``--max-prompts-per-request`` inputs per request."""
    most = settings.max_prompts_per_request
    if count > most:
        raise APIError(400, f"The number of inputs ({count}) exceeds this server's limit of {most} "
                            "(--max-prompts-per-request).", param=param, code="limit_exceeded")


def input_limit(info: PoolingModelInfo, truncate_prompt_tokens: int | None) -> int:
    """The most tokens each input keeps: the model's longest input, or ``truncate_prompt_tokens``."""
    keep = truncate_prompt_tokens
    if keep is None or keep == -1:
        return info.max_input
    if keep < 1:
        raise APIError(400, f"truncate_prompt_tokens must be -1 (the model's longest input) or at least 1, "
                            f"got {keep}.", param="truncate_prompt_tokens")
    if keep > info.max_model_len:
        raise APIError(400, f"truncate_prompt_tokens ({keep}) exceeds the model's context length "
                            f"({info.max_model_len}).", param="truncate_prompt_tokens")
    return keep


def _cut(ids: list[int], limit: int, side: str) -> list[int]:
    if len(ids) <= limit:
        return ids
    return ids[-limit:] if side == "left" else ids[:limit]


def tokenize(state: ServerState, item: str | list[int], limit: int, *, add_special_tokens: bool = True,
             pair: str | None = None, param: str = "input") -> list[int]:
    """One input (text, token ids, or a text pair for a cross-encoder) as at most ``limit`` ids."""
    tok = state.engine.tokenizer
    side = getattr(tok, "truncation_side", "right")
    if isinstance(item, str):
        ids = tok(item, pair, add_special_tokens=add_special_tokens, truncation=True, max_length=limit)["input_ids"]
    else:
        vocab = state.vocab_size
        bad = next((t for t in item if not isinstance(t, int) or t < 0 or t >= vocab), None)
        if bad is not None:
            raise out_of_vocabulary(param, bad, vocab)
        ids = list(item)
    ids = _cut(list(ids), limit, side)
    if not ids:
        raise APIError(400, f"'{param}' holds an input with no tokens.", param=param)
    return ids


def make_jobs(state: ServerState, items: list[Any], params: Any, limit: int, *, add_special_tokens: bool = True,
              param: str = "input") -> list[Job]:
    """Tokenize (and truncate) every input; run in a worker thread (inputs can be long)."""
    return [Job(i, item if isinstance(item, str) else None,
                tokenize(state, item, limit, add_special_tokens=add_special_tokens, param=param), params)
            for i, item in enumerate(items)]


async def pool(ctx: RequestContext, jobs: list[Job]) -> list[Any] | Response:
    """Submit ``jobs`` and collect each one's pooled tensor, in job order (or a 499 when the client left)."""
    ctx.submit(jobs)
    results: list[Any] = [None] * len(jobs)
    where = {job.index: n for n, job in enumerate(jobs)}

    def handle(ev: Event) -> None:
        results[where[ev.job.index]] = ev.pooled

    gone = await ctx.collect(handle)
    if gone is not None:
        return gone
    if any(r is None for r in results):
        raise APIError(500, "The engine finished a pooling request without a result.")
    return results


def usage(jobs: list[Job]) -> dict[str, int]:
    """``{"prompt_tokens", "total_tokens"}``: pooling reads prompts only."""
    n = sum(len(job.prompt_ids) for job in jobs)
    return UsageInfo(prompt_tokens=n, total_tokens=n).model_dump(include={"prompt_tokens", "total_tokens"})


def respond(ctx: RequestContext, body: BaseModel, jobs: list[Job]) -> Response:
    """The JSON answer, with the jobs' usage (also left for the access log, as the other routes do)."""
    out = body.model_dump()
    if "usage" in out:
        out["usage"] = usage(jobs)
        ctx.http.scope.setdefault("state", {})["usage"] = out["usage"]
    return Response(out, media_type="application/json")


def encode_floats(data: Any, encoding_format: str) -> Any:
    """A tensor as (nested) float lists, or base64 of its little-endian float32 bytes (OpenAI's)."""
    if encoding_format == "base64":
        return base64.b64encode(data.float().cpu().numpy().astype("<f4").tobytes()).decode("ascii")
    return data.float().tolist()


def classify_route(state: ServerState):
    from heron.engine.pooling_params import PoolingParams

    @post("/classify", status_code=200, summary="Classify texts with a classification model")
    async def classify(request: Request) -> Response:
        s = state.settings
        req = await read_body(request, ClassificationRequest, s.max_request_body_bytes, s.max_json_depth)
        check_pooling_model(state, req.model)
        items = input_items(req.input, "input")
        check_count(s, len(items), "input")
        ctx = RequestContext.open(state, request, req, prefix="classify", num_seqs=len(items), runner="pooling")
        with ctx.guard():
            info = model_info(state)
            info.require("classify")
            limit = input_limit(info, req.truncate_prompt_tokens)
            jobs = await ctx.off_loop(lambda: make_jobs(state, items, PoolingParams(task="classify"), limit,
                                                        add_special_tokens=req.add_special_tokens))
        results = await pool(ctx, jobs)
        if isinstance(results, Response):
            return results
        data = []
        for job, probs in zip(jobs, results, strict=True):
            values = probs.float().reshape(-1).tolist()
            best = max(range(len(values)), key=values.__getitem__)
            data.append(ClassificationData(index=job.index, label=info.labels.get(best, f"LABEL_{best}"),
                                           probs=values, num_classes=len(values)))
        return respond(ctx, ClassificationResponse(id=ctx.id, created=ctx.created, model=state.model_name,
                                                   data=data, usage=UsageInfo()), jobs)

    return classify
