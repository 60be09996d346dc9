"""Per-choice deltas from the engine's delta outputs, request timing, disconnect watching.

The engine already hands out deltas (only what is new per sample, see
:mod:`heron.engine.outputs`); :func:`iterate_choices` labels them per choice, adds the running
token count, and stops reporting a choice once it has finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Request

__all__ = ("ChoiceDelta", "ChoiceState", "RequestTimer", "iterate_choices", "watch_disconnect")


@dataclass(slots=True)
class ChoiceState:
    """What has been sent so far for one choice."""

    num_tokens: int = 0
    finished: bool = False


@dataclass(slots=True)
class ChoiceDelta:
    """What is new for one choice (``index``) in one engine output.

    Attributes:
        text: new visible text.
        token_ids: new output token ids.
        logprobs: per new token ``{token_id: Logprob}``, or None when not asked.
        finish_reason: set on the choice's last delta.
        stop_reason: the stop string or token id that ended it.
        num_output_tokens: the choice's output tokens so far (cumulative).
        cumulative_logprob: sum of the sampled tokens' logprobs so far (when asked).
    """

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[Any] | None
    finish_reason: str | None
    stop_reason: int | str | None
    num_output_tokens: int
    cumulative_logprob: float | None = None


@dataclass
class RequestTimer:
    """TTFT, inter-token gaps and end-to-end latency as the client sees them."""

    start: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None
    gaps: list[float] = field(default_factory=list)

    def tokens(self, count: int) -> None:
        if count <= 0:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        elif self.last is not None:
            # several tokens in one step share the gap
            self.gaps.extend([(now - self.last) / count] * count)
        self.last = now

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    def e2e(self) -> float:
        return time.perf_counter() - self.start


async def iterate_choices(outputs: AsyncIterator[Any], timer: RequestTimer) -> AsyncIterator[tuple[Any, list[ChoiceDelta]]]:
    """Yield ``(request_output, deltas)``: one :class:`ChoiceDelta` per choice with something new.

    ``outputs`` are the engine's delta outputs (``AsyncEngine.generate``); the request output is
    passed along for its request-level fields (``prompt_logprobs`` on the first, ``finished``,
    ``num_cached_tokens``, ``metrics``).
    """
    states: dict[int, ChoiceState] = {}
    async for out in outputs:
        deltas = []
        new_tokens = 0
        for comp in out.outputs:
            st = states.setdefault(comp.index, ChoiceState())
            if st.finished:
                continue
            st.num_tokens += len(comp.token_ids)
            new_tokens = max(new_tokens, len(comp.token_ids))
            if comp.finish_reason is not None:
                st.finished = True
            if comp.text or comp.token_ids or comp.finish_reason is not None:
                deltas.append(ChoiceDelta(comp.index, comp.text, comp.token_ids, comp.logprobs, comp.finish_reason,
                                          comp.stop_reason, st.num_tokens, comp.cumulative_logprob))
        timer.tokens(new_tokens)
        yield out, deltas


async def watch_disconnect(request: Request) -> None:
    """Return when the client goes away (the body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0)
