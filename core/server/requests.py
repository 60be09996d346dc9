"""The request layer every generating endpoint goes through.

A route reads like a recipe::

    body = await read_body(http, ChatCompletionRequest, ...)      # parse (large bodies off the loop)
    check_request_limits(settings, body, num_prompts=1)           # validate (cheap, before admission)
    ctx = RequestContext.open(state, http, body, prefix="chatcmpl", num_seqs=body.n)   # admit
    with ctx.guard():
        jobs = await ctx.off_loop(prepare, ...)                   # render + tokenize, off the loop
    ctx.submit(jobs)
    return ctx.stream(chunks(ctx)) or await ctx.collect(handle)   # stream or collect

The context owns what every endpoint does alike: the response id (a client's ``request_id`` or
``X-Request-Id`` is echoed in it but the engine's keys are always fresh, so two requests with the
same id never collide), the room admitted for its sequences, the engine requests it submitted
(aborted whenever it ends early: client gone, timeout, error), ``--request-timeout`` for whole and
streamed answers, metrics, and the mapping of engine failures to OpenAI errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.response import Stream

from heron.engine.errors import EngineBusyError, EngineDeadError
from heron.server.beam import beam_outputs
from heron.server.errors import APIError, error_body
from heron.server.state import Admission, ServerState, new_id
from heron.server.streams import ChoiceDelta, RequestTimer, iterate_choices, watch_disconnect

__all__ = ("Event", "Job", "RequestContext", "served_runner", "sse")

logger = logging.getLogger("heron.server")


@dataclass(slots=True)
class Job:
    """One prompt of a request, as submitted to the engine."""

    index: int  # the prompt's position in the request
    text: str | None  # the prompt text (for echo), when there is one
    prompt_ids: list[int]
    params: Any  # SamplingParams, or PoolingParams for the pooling endpoints
    engine_id: str = ""  # filled by submit(): unique per job, never the client's id

    @property
    def generates(self) -> bool:
        """Whether the job generates text (SamplingParams) rather than pooling the prompt."""
        return hasattr(self.params, "n")

    @property
    def num_choices(self) -> int:
        """Sequences the job yields: ``n`` samples, or one pooled result."""
        return getattr(self.params, "n", 1)


@dataclass(slots=True)
class Event:
    """Something new for one choice of one job (a pooling job has one event: its result)."""

    job: Job
    output: Any  # the engine's RequestOutput (a delta), or its PoolingRequestOutput
    delta: ChoiceDelta

    @property
    def choice(self) -> int:
        """The choice index in the response: prompts in order, each with its ``n`` samples."""
        return self.job.index * self.job.num_choices + self.delta.index

    @property
    def pooled(self) -> Any:
        """A pooling job's result: the pooled tensor (fp32) the engine returned."""
        return self.output.outputs.data


_DONE = object()


async def _pooled(outputs: AsyncIterator[Any], timer: RequestTimer) -> AsyncIterator[tuple[Any, list[ChoiceDelta]]]:
    """A pooling request's one output as a finished choice (so admission, metrics and aborts work alike)."""
    async for out in outputs:
        if out.finished:
            timer.tokens(1)  # the result is its "first token": time to first token = time to the result
            yield out, [ChoiceDelta(0, "", [], None, "stop", None, 0)]


def served_runner(engine: Any) -> str:
    """``"pooling"`` when the engine serves a pooling model (its ``pooler`` says so), else ``"generate"``."""
    for obj in (engine, getattr(engine, "engine", None)):
        pooler = getattr(obj, "pooler", None) or getattr(getattr(obj, "pooling", None), "pooler", None)
        if pooler is not None:
            return pooler.runner
    return "generate"


_RUNNER_ROUTES = {"generate": "/v1/chat/completions and /v1/completions",
                  "pooling": "/v1/embeddings, /pooling, /classify, /score and /rerank"}


def _check_runner(state: ServerState, http: Request, wanted: str) -> None:
    """A route of the other runner is a 400 that says which ``--runner`` serves it."""
    if state.engine is None:
        return  # admission answers 503 (loading / failed)
    runner = served_runner(state.engine)
    if runner != wanted:
        raise APIError(400, f"The model '{state.model_name}' runs with --runner {runner}, which serves "
                            f"{_RUNNER_ROUTES.get(runner, runner)}, not {http.url.path}; start the server with "
                            f"--runner {wanted} to use it.", param="model", code="wrong_runner")


def sse(payload: Any) -> bytes:
    """One server-sent event: ``data: <compact JSON or text>`` and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def _as_api_error(err: BaseException) -> APIError:
    """An engine failure as the client should see it."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, EngineDeadError):
        return APIError(503, f"The engine has failed: {err}", headers={"Retry-After": "30"})
    if isinstance(err, EngineBusyError):
        return APIError(503, str(err), headers={"Retry-After": "1"}, code="queue_full")
    if isinstance(err, ValueError):  # the engine refused the request (RequestRejectedError, TokenIdError)
        return APIError(400, str(err), param=getattr(err, "param", None))
    logger.error("request failed: %s: %s", type(err).__name__, err)
    return APIError(500, f"Generation failed for this request: {type(err).__name__}: {err}")


class RequestContext:
    """Per-request state shared by the steps of the layer (one small object, not ten arguments)."""

    def __init__(self, state: ServerState, http: Request, body: Any, *, prefix: str) -> None:
        self.state, self.http, self.body = state, http, body
        client_id = getattr(body, "request_id", None) or http.headers.get("x-request-id")
        #: the response's ``id``: echoes the client's request id when it sent one
        self.id = f"{prefix}-{client_id}" if client_id else new_id(prefix)
        self.created = int(time.time())
        self.timer = RequestTimer()
        self.jobs: list[Job] = []
        self.admission: Admission | None = None
        timeout = state.settings.request_timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._closed = False
        self._unfinished: dict[int, int] = {}  # job index -> choices not finished yet
        #: the LoRA adapter the request's ``model`` selected (heron.lora.LoRARequest; None: the base model)
        self.lora: Any = None
        state.in_flight += 1

    @classmethod
    def open(cls, state: ServerState, http: Request, body: Any, *, prefix: str, num_seqs: int,
             runner: str = "generate", lora: Any = None) -> RequestContext:
        """Check the runner serves the route (400), readiness, admit ``num_seqs`` sequences (503 when
        the queue is full) and open; ``lora`` is the adapter the request runs through (None: none)."""
        _check_runner(state, http, runner)
        admission = state.admit(num_seqs)
        ctx = cls(state, http, body, prefix=prefix)
        ctx.admission, ctx.lora = admission, lora
        return ctx

    @property
    def model_name(self) -> str:
        """The ``model`` the answer reports: the adapter's name, or the first served name (as vLLM)."""
        return self.lora.lora_name if self.lora is not None else self.state.model_name

    # -- preparing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Close the context (give its room back) if preparing the request fails."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    async def off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread: rendering, tokenizing and decoding of large requests
        must not stall the streams other clients are reading."""
        return await asyncio.to_thread(fn, *args)

    def submit(self, jobs: list[Job]) -> None:
        """Give each job a fresh engine id; generation starts when the answer is consumed."""
        for job in jobs:
            job.engine_id = new_id("req")
            self._unfinished[job.index] = job.num_choices
        self.jobs = jobs

    # -- generating -------------------------------------------------------------------------

    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise APIError(408, f"Request timed out after {self.state.settings.request_timeout} s.")
        return left

    async def events(self) -> AsyncIterator[Event]:
        """Every job's deltas as they arrive, with metrics; raises APIError for any failure.

        Leaving early (an error, a timeout, the consumer closing it) aborts every engine request
        of this context that has not finished, so no KV block is held for an answer nobody reads.
        """
        engine = self.state.engine
        queue: asyncio.Queue = asyncio.Queue()
        extra = {"lora_request": self.lora} if self.lora is not None else {}

        async def run(job: Job) -> None:
            try:
                if job.generates and getattr(self.body, "use_beam_search", False):
                    outputs = beam_outputs(engine, job.prompt_ids, job.params, self.body, job.engine_id, **extra)
                else:
                    outputs = engine.generate(job.prompt_ids, job.params, job.engine_id,
                                              priority=getattr(self.body, "priority", 0),
                                              cache_salt=getattr(self.body, "cache_salt", None), **extra)
                labelled = iterate_choices(outputs, self.timer) if job.generates else _pooled(outputs, self.timer)
                async for out, deltas in labelled:
                    for d in deltas:
                        queue.put_nowait(Event(job, out, d))
                queue.put_nowait(_DONE)
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                queue.put_nowait(err)

        tasks = [asyncio.ensure_future(run(job)) for job in self.jobs]
        running = len(tasks)
        try:
            while running:
                item = await asyncio.wait_for(queue.get(), self._remaining())
                if item is _DONE:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    raise _as_api_error(item)
                self._observe(item)
                yield item
        except TimeoutError:
            raise APIError(408, f"Request timed out after {self.state.settings.request_timeout} s.") from None
        finally:
            for task in tasks:
                task.cancel()
            for job in self.jobs:
                if self._unfinished.get(job.index):
                    engine.abort(job.engine_id)

    def _observe(self, ev: Event) -> None:
        d = ev.delta
        if d.finish_reason is None:
            return
        self._unfinished[ev.job.index] -= 1
        self.state.metrics.observe_finished(
            prompt_tokens=len(ev.job.prompt_ids) if d.index == 0 else 0, completion_tokens=d.num_output_tokens,
            finish_reason=d.finish_reason, ttft=self.timer.ttft, e2e=self.timer.e2e(),
            queue_time=getattr(getattr(ev.output, "metrics", None), "queue_time", None), itls=self.timer.gaps,
            params=ev.job.params)

    async def collect(self, handle: Callable[[Event], None]) -> Response | None:
        """Feed every event to ``handle`` until all choices finish.

        Returns None when done, or an empty 499 response when the client went away first.
        Raises APIError (400/408/500/503) when generation fails.
        """

        async def drain() -> None:
            async for ev in self.events():
                handle(ev)

        consumer = asyncio.ensure_future(drain())
        watcher = asyncio.ensure_future(watch_disconnect(self.http))
        try:
            done, _ = await asyncio.wait({consumer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if consumer not in done:
                return Response(b"", status_code=499)
            consumer.result()
            return None
        finally:
            watcher.cancel()
            if not consumer.done():  # client gone, or this handler was cancelled (shutdown)
                consumer.cancel()
            self.close()

    def stream(self, chunks: AsyncIterator[bytes]) -> Stream:
        """An SSE response over ``chunks``; a failure after the headers went out becomes one error
        event (OpenAI's shape), then ``[DONE]``."""

        async def guarded() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except APIError as err:
                yield sse(error_body(err.status, err.message, param=err.param, code=err.code, type=err.type))
                yield sse("[DONE]")  # as vLLM does: clients waiting for the end marker stop cleanly
            except Exception as err:  # noqa: BLE001 - the status line is already sent
                logger.exception("stream failed")
                yield sse(error_body(500, f"Internal error during generation: {type(err).__name__}: {err}"))
                yield sse("[DONE]")
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
                self.close()

        gen = guarded()
        weakref.finalize(gen, self.close)  # a stream never started still gives its room back
        return Stream(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def close(self) -> None:
        """Give back the admitted room and count unfinished choices as aborted (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.state.in_flight -= 1
        if self.admission is not None:
            self.admission.release()
        for _ in range(sum(self._unfinished.values())):
            self.state.metrics.observe_aborted(e2e=self.timer.e2e())
        self._unfinished.clear()
