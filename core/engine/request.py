"""Request and sequence state: one :class:`Request` per API request, one :class:`Sequence` per sample.

Outputs are deltas: each sequence remembers how much of its output has been handed out, and
:meth:`Request.output` returns only what is new (tokens, logprobs) since the last call, never a
copy of the whole output. Logprobs are not kept once handed out. Text comes from the request's
:class:`~heron.engine.detokenizer.RequestDetokenizer` when the engine detokenizes (in-process);
an engine process leaves it to the front-end.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Iterator
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import torch

from heron.engine.detokenizer import RequestDetokenizer
from heron.engine.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from heron.engine.pooling_outputs import PoolingOutput, PoolingRequestOutput
from heron.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from heron.engine.pooling import PoolingState

__all__ = ("OutputIds", "Request", "Sequence", "SequenceStatus")


class OutputIds(SequenceABC[int]):
    """A read-only view of a sequence's output ids (its tokens after the prompt), without a copy.

    What per-token callbacks such as a reasoning gate's ``is_reasoning_end`` get, so a call
    costs what it reads, not a copy of the whole output.
    """

    __slots__ = ("_ids", "_start")

    def __init__(self, ids: list[int], start: int) -> None:
        self._ids, self._start = ids, start

    def __len__(self) -> int:
        return len(self._ids) - self._start

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...
    def __getitem__(self, i: int | slice) -> int | list[int]:
        n = len(self)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                return self._ids[self._start + start : self._start + max(start, stop)]
            return [self._ids[self._start + k] for k in range(start, stop, step)]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("output id index out of range")
        return self._ids[self._start + i]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._ids, self._start, None)


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
    generator: torch.Generator | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    #: tokens whose K/V are in the cache (computed or found by prefix caching)
    num_computed_tokens: int = 0
    #: full blocks of this sequence already registered in the prefix cache
    num_hashed_blocks: int = 0
    block_hashes: list[bytes] = field(default_factory=list)  # prefix-cache keys of its full blocks
    num_cached_tokens: int = -1  # prefix-cache hits at first scheduling (-1: not scheduled yet)
    num_preemptions: int = 0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    cumulative_logprob: float = 0.0
    #: logprobs of output tokens not handed out yet (None: not asked for)
    logprobs: list[dict[int, Logprob]] | None = None
    matcher: Any = None  # structured-output matcher, when constrained (and reasoning is over)
    pending_grammar: Any = None  # the compiled grammar, while a reasoning gate holds it back
    gate: Any = None  # this sequence's own reasoning parser, while ``pending_grammar`` waits
    #: output tokens already handed out in a delta
    num_sent_tokens: int = 0
    finish_sent: bool = False

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
        """A copy of the output ids (use :attr:`output_view` on per-token paths)."""
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def output_view(self) -> OutputIds:
        return OutputIds(self.token_ids, self.num_prompt_tokens)

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def priority_key(self) -> tuple[int, float, int]:
        """Smaller runs first: (priority, arrival, seq_id)."""
        return (self.request.priority, self.request.arrival_time, self.seq_id)

    def delta(self) -> CompletionOutput | None:
        """What is new since the previous delta (None: nothing), and mark it handed out."""
        if self.finish_sent:
            return None
        start = self.num_prompt_tokens + self.num_sent_tokens
        new_ids = self.token_ids[start:] if start < len(self.token_ids) else []
        if not new_ids and not self.finished:
            return None
        lps = None
        if self.logprobs is not None:
            lps, self.logprobs = self.logprobs, []
        self.num_sent_tokens += len(new_ids)
        self.finish_sent = self.finished
        return CompletionOutput(
            index=self.index,
            text="",
            token_ids=new_ids,
            cumulative_logprob=self.cumulative_logprob if lps is not None else None,
            logprobs=lps,
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
    prompt_logprobs_sent: bool = False
    #: anything else that changes the KV of the same tokens (e.g. a LoRA adapter's name): part of
    #: the prefix-cache keys, so requests that differ in it never share cached blocks
    cache_key_extra: str | None = None
    aborted: bool = False
    #: why handling this request failed (it then finished with finish_reason "error")
    error: str | None = None
    #: the n > 1 siblings join once sample 0 has computed the prompt, sharing its full blocks
    siblings_pending: list[Sequence] = field(default_factory=list)
    #: a pooling request (prefill only, ``params.max_tokens == 0``): its parameters and kept rows
    pooling: PoolingState | None = None
    #: False: never match its prompt in the prefix cache (it needs every row computed)
    use_prefix_cache: bool = True
    #: the whole prompt must run in one step (a bidirectional encoder: no chunked prefill)
    whole_prompt: bool = False
    #: the LoRA adapter it runs with (the engine's uid for it), None for the base model
    lora_uid: int | None = None
    #: turns the token deltas into text and finds stop strings (None: the caller detokenizes)
    detok: RequestDetokenizer | None = None
    #: samples a stop string ended in the last output, still to be removed from the scheduler
    stopped: list[Sequence] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = RequestMetrics(arrival_time=self.arrival_time)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.seqs)

    def output(self) -> RequestOutput | PoolingRequestOutput:
        """The delta since the previous call: only the samples with something new.

        ``prompt_logprobs`` come once, on the first output (the prompt is complete by then). A
        pooling request has one output, a :class:`PoolingRequestOutput`, once it is finished.
        """
        if self.pooling is not None:
            return PoolingRequestOutput(self.request_id, PoolingOutput(self.pooling.data), self.prompt_token_ids,
                                        finished=self.finished, num_cached_tokens=self._num_cached(),
                                        error=self.error)
        prompt_lps = None
        if self.prompt_logprobs is not None and not self.prompt_logprobs_sent:
            prompt_lps, self.prompt_logprobs_sent = self.prompt_logprobs, True
        outputs = [d for d in map(Sequence.delta, self.seqs) if d is not None]
        out = RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=outputs,
            finished=self.finished,
            num_cached_tokens=self._num_cached(),
            prompt_logprobs=prompt_lps,
            metrics=self.metrics,
            error=self.error,
        )
        if self.detok is not None:
            self._stop(self.detok.process(out) or (), out)
        return out

    def _stop(self, indices: Any, out: RequestOutput) -> None:
        """Samples a stop string ended (their delta already says so): finish them here."""
        by_index = {c.index: c for c in out.outputs}
        for i in indices:
            seq, comp = self.seqs[i], by_index[i]
            seq.status, seq.finish_sent = SequenceStatus.FINISHED, True
            seq.finish_reason, seq.stop_reason = comp.finish_reason, comp.stop_reason
            self.stopped.append(seq)

    def _num_cached(self) -> int:
        return max(0, min((s.num_cached_tokens for s in self.seqs), default=0))
