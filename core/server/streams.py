"""Per-choice deltas from the engine's cumulative outputs, request timing, disconnect watching."""

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

    text_sent: int = 0
    tokens_sent: int = 0
    logprobs_sent: int = 0
    finished: bool = False


@dataclass(slots=True)
class ChoiceDelta:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[Any] | None
    finish_reason: str | None
    stop_reason: int | str | None
    output: Any  # the cumulative CompletionOutput


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
    """Yield ``(request_output, deltas)`` where deltas hold only what is new for each choice."""
    states: dict[int, ChoiceState] = {}
    async for out in outputs:
        deltas = []
        new_tokens = 0
        for comp in out.outputs:
            st = states.setdefault(comp.index, ChoiceState())
            if st.finished:
                continue
            text = comp.text[st.text_sent :]
            toks = list(comp.token_ids[st.tokens_sent :])
            lps = None
            if comp.logprobs is not None:
                lps = list(comp.logprobs[st.logprobs_sent :])
                st.logprobs_sent = len(comp.logprobs)
            st.text_sent, st.tokens_sent = len(comp.text), len(comp.token_ids)
            new_tokens = max(new_tokens, len(toks))
            if comp.finish_reason is not None:
                st.finished = True
            if text or toks or comp.finish_reason is not None:
                deltas.append(ChoiceDelta(comp.index, text, toks, lps, comp.finish_reason, comp.stop_reason, comp))
        timer.tokens(new_tokens)
        yield out, deltas


async def watch_disconnect(request: Request) -> None:
    """Return when the client goes away (the body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0)
