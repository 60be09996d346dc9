"""Request and sequence state: one :class:`Request` per API request, one :class:`Sequence` per sample."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from heron.engine.detokenizer import IncrementalDetokenizer
from heron.engine.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from heron.engine.sampling_params import SamplingParams

__all__ = ("Request", "Sequence", "SequenceStatus")


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One sample being generated: its tokens, its KV blocks and how far the model has read it."""

    seq_id: int
    request: Request
    index: int
    token_ids: list[int]  # prompt + output
    num_prompt_tokens: int
    detok: IncrementalDetokenizer
    generator: torch.Generator | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    #: tokens whose K/V are in the cache (computed or found by prefix caching)
    num_computed_tokens: int = 0
    #: full blocks of this sequence already registered in the prefix cache
    num_hashed_blocks: int = 0
    block_hashes: list[int] = field(default_factory=list)
    num_cached_tokens: int = -1  # prefix-cache hits at first scheduling (-1: not scheduled yet)
    num_preemptions: int = 0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    cumulative_logprob: float = 0.0
    logprobs: list[dict[int, Logprob]] | None = None
    matcher: Any = None  # structured-output matcher, when constrained (and reasoning is over)
    pending_grammar: Any = None  # the compiled grammar, while a reasoning gate holds it back

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def priority_key(self) -> tuple[int, float, int]:
        """Smaller runs first: (priority, arrival, seq_id)."""
        return (self.request.priority, self.request.arrival_time, self.seq_id)

    def completion(self) -> CompletionOutput:
        return CompletionOutput(
            index=self.index,
            text=self.detok.visible(self.finished),
            token_ids=self.output_ids,
            cumulative_logprob=self.cumulative_logprob if self.logprobs is not None else None,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
        )


@dataclass(eq=False)
class Request:
    """An API request: a prompt, its sampling parameters and its ``n`` sequences."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = 0
    cache_salt: str | None = None
    arrival_time: float = field(default_factory=time.time)
    seqs: list[Sequence] = field(default_factory=list)
    metrics: RequestMetrics | None = None
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    #: prompt positions whose logprobs are still to be computed (prompt_logprobs requests)
    prompt_logprobs_done: int = 0
    aborted: bool = False
    #: the n > 1 siblings join once sample 0 has computed the prompt, sharing its full blocks
    siblings_pending: list[Sequence] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = RequestMetrics(arrival_time=self.arrival_time)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.seqs)

    def output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=[s.completion() for s in self.seqs],
            finished=self.finished,
            num_cached_tokens=max(0, min((s.num_cached_tokens for s in self.seqs), default=0)),
            prompt_logprobs=list(self.prompt_logprobs) if self.prompt_logprobs is not None else None,
            metrics=self.metrics,
        )
