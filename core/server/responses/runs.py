"""One response being generated, and the runs and store behind ``/v1/responses``.

A :class:`ResponseRun` feeds the engine's deltas through the chat pipeline into a
:class:`~heron.server.responses.output.ResponseBuilder` and, when it ends, puts the response in
the store (``store: true``). It is consumed in one of three ways: whole (the route collects it,
watching for the client going away), streamed (its events become SSE), or in the background (a
task drains it into an event log that ``GET ...?stream=true`` replays, and ``cancel`` stops).
:class:`Responses` holds the store plugin and the background runs.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from heron.interfaces.response_store import ResponseStore, StoredResponse
from heron.server.errors import APIError
from heron.server.logprobs import chat_logprobs
from heron.server.requests import Event, RequestContext
from heron.server.responses.output import ResponseBuilder

__all__ = ("ResponseRun", "Responses")

logger = logging.getLogger("heron.server")

#: finished background runs whose events stay replayable (``GET ...?stream=true``)
KEEP_FINISHED_RUNS = 64


class ResponseRun:
    """The generation of one response (one choice of the chat pipeline)."""

    def __init__(self, ctx: RequestContext, prep: Any, builder: ResponseBuilder, *, record: StoredResponse,
                 store: ResponseStore | None, top_logprobs: int | None) -> None:
        self.ctx, self.prep, self.builder = ctx, prep, builder
        self.record, self.store = record, store  # store None: ``store: false``
        self.pipe = prep.pipeline()
        self.top_logprobs = top_logprobs  # None: no logprobs in the output
        self.tok = ctx.state.engine.tokenizer
        self.output_tokens = self.cached = 0
        self.finish_reason: str | None = None
        self.log: list[dict[str, Any]] = []  # background runs: every event, for replays
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    @property
    def response(self) -> dict[str, Any]:
        return self.builder.response

    # -- growing ---------------------------------------------------------------------------------

    def handle(self, ev: Event) -> list[dict[str, Any]]:
        """One engine delta: through the parsers into output items; returns the stream events."""
        d = ev.delta
        self.output_tokens = d.num_output_tokens
        self.cached = max(self.cached, getattr(ev.output, "num_cached_tokens", 0) or 0)
        logprobs = None
        if self.top_logprobs is not None and d.logprobs is not None:
            lp = chat_logprobs(d.token_ids, d.logprobs, self.top_logprobs, self.tok)
            logprobs = [entry.model_dump() for entry in lp.content or []]
        out = self.builder.feed(self.pipe.feed(d.text, d.token_ids), logprobs)
        if d.finish_reason is not None:
            self.finish_reason = d.finish_reason
            out += self.builder.feed(self.pipe.finish())
        return out

    def usage(self) -> dict[str, Any]:
        prompt = len(self.prep.prompt_ids)
        reasoning = self.pipe.result().reasoning
        reasoning_tokens = len(self.tok.encode(reasoning, add_special_tokens=False)) if reasoning else 0
        written = prompt - self.cached if self.ctx.state.settings.enable_prefix_caching else 0
        return {"input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": self.cached, "cache_write_tokens": written},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                "total_tokens": prompt + self.output_tokens}

    def complete(self) -> list[dict[str, Any]]:
        """The engine finished: ``completed``, or ``incomplete`` when the token budget ran out."""
        if self.finish_reason == "length":
            return self.builder.finish("incomplete", usage=self.usage(), reason="max_output_tokens")
        if self.finish_reason in (None, "abort"):
            return self.fail(APIError(500, "The engine stopped this response before it finished."))
        return self.builder.finish("completed", usage=self.usage())

    def fail(self, err: APIError) -> list[dict[str, Any]]:
        code = err.code or ("server_error" if err.status >= 500 else "invalid_prompt")
        return [*self.builder.error(err.code, err.message, err.param),
                *self.builder.finish("failed", usage=self.usage(), error={"code": code, "message": err.message})]

    async def persist(self) -> None:
        """Keep the finished response (``store: true``): its output joins the conversation."""
        if self.store is None:
            return
        self.record.response = copy.deepcopy(self.response)
        self.record.messages = [*self.record.messages, self.builder.assistant_message()]
        try:
            await self.store.put(self.record)
        except Exception:  # noqa: BLE001 - a failing third-party store must not fail the answer
            logger.exception("the response store failed to keep %s", self.record.id)

    # -- consuming -------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``response.created`` to the terminal one; persists the response at the end."""
        for event in self.builder.start():
            yield event
        try:
            async for ev in self.ctx.events():
                for event in self.handle(ev):
                    yield event
            closing = self.complete()
        except APIError as err:
            closing = self.fail(err)
        except asyncio.CancelledError:
            self.builder.finish("cancelled", usage=self.usage())
            await self.persist()
            raise
        for event in closing:
            yield event
        await self.persist()

    async def whole(self) -> Any:
        """Collect the run (the route's answer when not streaming); None when done, else the 499."""
        gone = await self.ctx.collect(self.handle)  # closes the context
        if gone is not None:
            return gone
        self.complete()
        await self.persist()
        return None

    async def drain(self) -> None:
        """Background: run to the end, keeping each event for streams that follow."""
        try:
            async for event in self.events():
                self.log.append(event)
                self.changed.set()
        except asyncio.CancelledError:
            pass
        finally:
            self.ctx.close()
            self.changed.set()

    async def follow(self, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """A background run's events with ``sequence_number > after``, as they come, until it ends."""
        sent = 0
        while True:
            self.changed.clear()
            while sent < len(self.log):
                event = self.log[sent]
                sent += 1
                if event["sequence_number"] > after:
                    yield event
            if self.task is None or self.task.done():
                return
            await self.changed.wait()


class Responses:
    """The store plugin and the background runs of one server."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self.runs: OrderedDict[str, ResponseRun] = OrderedDict()

    def start_background(self, run: ResponseRun) -> None:
        run.task = asyncio.ensure_future(run.drain())
        self.runs[run.response["id"]] = run
        finished = [rid for rid, r in self.runs.items() if r.task is not None and r.task.done()]
        for rid in finished[: max(0, len(finished) - KEEP_FINISHED_RUNS)]:
            del self.runs[rid]

    async def find(self, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(response, input items) of a running background response or a stored one."""
        run = self.runs.get(response_id)
        if run is not None and run.task is not None and not run.task.done():
            return copy.deepcopy(run.response), list(run.record.input_items)
        record = await self.store.get(response_id)
        return None if record is None else (record.response, record.input_items)

    async def cancel(self, response_id: str) -> dict[str, Any]:
        run = self.runs.get(response_id)
        if run is None:
            found = await self.find(response_id)
            if found is None:
                raise not_found(response_id)
            if not found[0].get("background"):
                raise APIError(400, "Only responses created with 'background': true can be cancelled.",
                               param="response_id")
            return found[0]  # finished already: cancelling again changes nothing
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.wait([run.task])
        return copy.deepcopy(run.response)

    async def delete(self, response_id: str) -> bool:
        run = self.runs.pop(response_id, None)
        if run is not None and run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.wait([run.task])
        return await self.store.delete(response_id)

    async def close(self) -> None:
        for run in list(self.runs.values()):
            if run.task is not None and not run.task.done():
                run.task.cancel()
        await self.store.close()


def not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", param="response_id", code="not_found")
