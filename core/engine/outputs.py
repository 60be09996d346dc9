"""What the engine hands back: vLLM's ``RequestOutput`` / ``CompletionOutput`` shapes.

``LLMEngine.step()`` and ``AsyncEngine.generate()`` yield *deltas* (vLLM's ``DELTA`` output
kind): each :class:`CompletionOutput` holds only what is new since the previous output of its
request, and only samples with something new are listed. :func:`merge_output` appends a later
delta to an earlier one (what a consumer that is behind, or the offline ``LLM``, does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("CompletionOutput", "Logprob", "RequestMetrics", "RequestOutput", "merge_output")


@dataclass(slots=True)
class Logprob:
    """One token's log-probability, its rank in the distribution (1 = most likely) and its text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass(slots=True)
class CompletionOutput:
    """One of the ``n`` samples of a request: in an engine output, what is new since the last one.

    Attributes:
        index: which of the ``n`` samples.
        text: new visible text (text that could still become a stop string is held back).
        token_ids: new output token ids.
        cumulative_logprob: sum of the sampled tokens' logprobs so far (when logprobs are asked).
        logprobs: per new token, ``{token_id: Logprob}``: the sampled token and the top ``logprobs``.
        finish_reason: on the last delta of the sample: "stop", "length", "abort" or "error".
        stop_reason: the stop string or stop token id that ended it.
    """

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    stop_reason: int | str | None = None  # the stop string or stop token id that ended it

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestMetrics:
    """Wall-clock times (``time.time()``) of a request's life."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None

    @property
    def queue_time(self) -> float | None:
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.arrival_time


@dataclass(slots=True)
class RequestOutput:
    """One output of a request: the samples with news, whether all samples are finished.

    ``prompt_logprobs`` (per prompt token, None for the first) come once, on the first output.
    ``error`` says why the engine ended the request, when it failed (its samples then finish
    with ``finish_reason="error"``).
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    #: per prompt token (None for the first): {token_id: Logprob}
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    metrics: RequestMetrics | None = None
    extra: dict = field(default_factory=dict)
    error: str | None = None


def merge_output(into: RequestOutput, later: RequestOutput) -> RequestOutput:
    """Append the delta ``later`` to ``into`` (in place; ``into`` must be a delta the caller owns).

    Token ids, logprobs and text are appended per sample index; finish and stop reasons,
    ``finished``, metrics and the error come from ``later``. Returns ``into``.
    """
    by_index = {c.index: c for c in into.outputs}
    for comp in later.outputs:
        mine = by_index.get(comp.index)
        if mine is None:
            into.outputs.append(comp)
            into.outputs.sort(key=lambda c: c.index)
            by_index[comp.index] = comp
            continue
        mine.text += comp.text
        mine.token_ids.extend(comp.token_ids)
        if comp.logprobs is not None:
            if mine.logprobs is None:
                mine.logprobs = []
            mine.logprobs.extend(comp.logprobs)
        if comp.cumulative_logprob is not None:
            mine.cumulative_logprob = comp.cumulative_logprob
        mine.finish_reason, mine.stop_reason = comp.finish_reason, comp.stop_reason
    if into.prompt_logprobs is None:
        into.prompt_logprobs = later.prompt_logprobs
    into.finished = later.finished
    into.num_cached_tokens = later.num_cached_tokens
    into.metrics = later.metrics or into.metrics
    into.extra.update(later.extra)
    into.error = later.error or into.error
    return into
