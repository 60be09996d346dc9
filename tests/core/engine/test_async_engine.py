"""``AsyncEngine`` without a model: merged deltas, a failing request, a dying loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import pytest

from heron.engine import AsyncEngine, CompletionOutput, RequestOutput, SamplingParams
from heron.engine.errors import EngineDeadError, RequestFailedError


def _delta(rid: str, step: int, last: bool, error: str | None = None) -> RequestOutput:
    comp = CompletionOutput(0, f"t{step} ", [step], cumulative_logprob=-0.5 * (step + 1),
                            logprobs=[{step: -0.5}], finish_reason=("error" if error else "length") if last else None)
    return RequestOutput(rid, None, [1, 2], [comp], finished=last, error=error,
                         prompt_logprobs=[None, {2: -1.0}] if step == 0 else None)


class FakeEngine:
    """Each request yields ``steps`` deltas, one per step; ``explode`` makes ``step()`` raise."""

    tokenizer = None
    max_model_len = 128
    generation_defaults: dict = {}

    def __init__(self, steps: int = 5, pause: float = 0.0) -> None:
        self.steps, self.pause = steps, pause
        self.queues: dict[str, deque] = {}
        self.aborted: list[str] = []
        self.explode = threading.Event()
        self.fail_ids: set[str] = set()

    def add_request(self, rid, prompt, params, *, prompt_token_ids, priority=0, cache_salt=None, cache_key_extra=None):
        n = params.max_tokens or self.steps
        if rid in self.fail_ids:
            self.queues[rid] = deque([_delta(rid, 0, False), _delta(rid, 1, True, error="sampling failed: boom")])
        else:
            self.queues[rid] = deque(_delta(rid, i, i == n - 1) for i in range(n))

    def has_unfinished(self) -> bool:
        return bool(self.queues)

    def step(self) -> list[RequestOutput]:
        if self.explode.is_set():
            raise RuntimeError("the forward exploded")
        time.sleep(self.pause)
        outs = []
        for rid, q in list(self.queues.items()):
            out = q.popleft()
            if out.finished:
                del self.queues[rid]
            outs.append(out)
        return outs

    def abort(self, rid: str) -> None:
        if self.queues.pop(rid, None) is not None:
            self.aborted.append(rid)


def test_deltas_the_consumer_has_not_read_are_merged_not_dropped():
    client = AsyncEngine(FakeEngine(steps=6, pause=0.01))

    async def scenario():
        outs = []
        async for out in client.generate([1, 2], SamplingParams(max_tokens=6), "m"):
            outs.append(out)
            if len(outs) == 1:
                time.sleep(0.5)  # block the event loop: the engine runs ahead, deltas pile up
        return outs

    try:
        outs = asyncio.run(scenario())
    finally:
        client.shutdown()
    assert len(outs) == 2  # the first, then the five others merged into one
    merged = outs[1].outputs[0]
    assert merged.token_ids == [1, 2, 3, 4, 5] and merged.text == "t1 t2 t3 t4 t5 "
    assert merged.logprobs == [{i: -0.5} for i in range(1, 6)] and merged.cumulative_logprob == -3.0
    assert merged.finish_reason == "length" and outs[1].finished
    assert outs[0].prompt_logprobs == [None, {2: -1.0}] and outs[1].prompt_logprobs is None


def test_a_failed_request_raises_request_failed_and_the_others_finish():
    engine = FakeEngine(steps=4)
    engine.fail_ids.add("bad")
    client = AsyncEngine(engine)

    async def collect(rid: str) -> list[int]:
        return [t async for out in client.generate([1], SamplingParams(max_tokens=4), rid)
                for t in out.outputs[0].token_ids]

    async def scenario():
        return await asyncio.gather(collect("ok1"), collect("bad"), collect("ok2"), return_exceptions=True)

    try:
        ok1, bad, ok2 = asyncio.run(scenario())
    finally:
        client.shutdown()
    assert ok1 == ok2 == [0, 1, 2, 3]
    assert isinstance(bad, RequestFailedError) and "sampling failed: boom" in str(bad)
    assert client.error is None


def test_a_dying_loop_calls_on_failure_once_and_ends_open_streams():
    engine = FakeEngine(steps=10_000, pause=0.005)
    failures: list[BaseException] = []
    client = AsyncEngine(engine, on_failure=failures.append)

    async def scenario():
        seen = 0
        with pytest.raises(EngineDeadError, match="the forward exploded"):
            async for _ in client.generate([1], SamplingParams(max_tokens=10_000), "open"):
                seen += 1
                if seen == 3:
                    engine.explode.set()
        with pytest.raises(EngineDeadError, match="the forward exploded"):
            async for _ in client.generate([1], SamplingParams(), "later"):
                pass

    try:
        asyncio.run(scenario())
        client._thread.join(5)
        assert [str(e) for e in failures] == ["the forward exploded"] and failures[0] is client.error
        assert not client.alive
        late: list[BaseException] = []
        client.on_failure = late.append  # set after the death: called at once
        assert late == [client.error] and len(failures) == 1
    finally:
        client.shutdown()


def test_open_requests_are_bounded():
    """The inbox cannot grow without bound: past ``max_open_requests`` a new request is refused
    at once (EngineBusyError) and accepted again once one finishes."""
    from heron.engine.errors import EngineBusyError

    client = AsyncEngine(FakeEngine(steps=20, pause=0.01), max_open_requests=2)

    async def scenario():
        async def run(rid):
            return [out async for out in client.generate([1, 2], SamplingParams(max_tokens=20), rid)]

        first = asyncio.ensure_future(run("a"))
        second = asyncio.ensure_future(run("b"))
        await asyncio.sleep(0.05)  # both are open
        with pytest.raises(EngineBusyError):
            await run("c")
        await first
        await second
        return await run("d")

    try:
        outs = asyncio.run(scenario())
    finally:
        client.shutdown()
    assert outs[-1].finished
