"""Sequences without a model: enough state for the block manager and scheduler."""

from __future__ import annotations

from heron.engine.request import Request, Sequence
from heron.engine.sampling_params import SamplingParams

_count = iter(range(10**9))


def make_seq(tokens: list[int], *, priority: int = 0, salt: str | None = None, arrival: float = 0.0,
             params: SamplingParams | None = None) -> Sequence:
    req = Request(f"r{next(_count)}", None, list(tokens), params or SamplingParams(), priority=priority,
                  cache_salt=salt, arrival_time=arrival)
    seq = Sequence(next(_count), req, 0, list(tokens), len(tokens))
    req.seqs.append(seq)
    return seq
