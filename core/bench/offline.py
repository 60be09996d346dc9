"""Offline benchmarks of heron's engine: batched throughput and single-request latency.

Both use greedy decoding with ``ignore_eos`` so every request makes exactly ``output_len``
tokens, and both run a short warm-up first (the first forward pays for lazy allocations) on
prompts the timed run does not reuse: a warm-up on the timed prompts would leave their blocks in
the prefix cache and make the timed run look faster than it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from heron.bench.stats import percentile
from heron.bench.workload import Prompt

__all__ = ("LatencyResult", "ThroughputResult", "run_latency", "run_throughput")


@dataclass(slots=True)
class ThroughputResult:
    num_requests: int
    input_tokens: int
    output_tokens: int
    seconds: float
    requests_per_s: float
    output_tok_s: float
    total_tok_s: float


@dataclass(slots=True)
class LatencyResult:
    input_len: int
    output_len: int
    ttft_s: float  # median over iterations
    decode_tok_s: float  # median over iterations: (tokens - 1) / (end - first token)
    latency_s: float  # median end-to-end seconds of one request
    iterations: list[dict[str, float]] = field(default_factory=list)


def _params(output_len: int) -> Any:
    from heron import SamplingParams

    return SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)


def _inputs(prompts: list[Prompt]) -> list[dict[str, Any]]:
    return [{"prompt_token_ids": p.token_ids} if p.token_ids is not None else {"prompt": p.text} for p in prompts]


def run_throughput(llm: Any, prompts: list[Prompt], output_len: int, *, use_tqdm: bool = True,
                   warmup: Sequence[Prompt] = ()) -> ThroughputResult:
    """Generate for all ``prompts`` at once through ``llm.generate`` and time it.

    ``warmup`` prompts run first, untimed: take them from the same :func:`random_prompts` call as
    ``prompts`` (e.g. its first two), so they share no prefix-cache block with the timed ones.
    """
    if warmup:
        llm.generate(_inputs(list(warmup)), _params(4), use_tqdm=False)
    start = time.perf_counter()
    outs = llm.generate(_inputs(prompts), _params(output_len), use_tqdm=use_tqdm)
    seconds = time.perf_counter() - start
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    in_tokens = sum(len(o.prompt_token_ids) for o in outs)
    return ThroughputResult(len(outs), in_tokens, out_tokens, seconds, len(outs) / seconds,
                            out_tokens / seconds, (in_tokens + out_tokens) / seconds)


def run_latency(llm: Any, prompts: list[Prompt], output_len: int, *, warmup: int = 1,
                use_tqdm: bool = True) -> LatencyResult:
    """One request at a time, one per prompt (the first ``warmup`` are not counted).

    Drives ``llm.engine`` directly so the first token is timed at the step that produced it.
    Take all prompts from one :func:`random_prompts` call so the warm-up ones share no
    prefix-cache block with the measured ones.
    """
    from tqdm.auto import tqdm

    engine, params = llm.engine, _params(output_len)
    runs = []
    for i, prompt in enumerate(tqdm(prompts, desc="Latency", unit="req", disable=not use_tqdm)):
        rid = f"bench-latency-{i}"
        start = time.perf_counter()
        first = end = None
        count = 0
        engine.add_request(rid, prompt.text if prompt.token_ids is None else None, params,
                           prompt_token_ids=prompt.token_ids)
        while engine.has_unfinished():
            for out in engine.step():
                if out.request_id != rid:
                    continue
                count += sum(len(c.token_ids) for c in out.outputs)  # the engine's outputs are deltas
                if first is None and count:
                    first = time.perf_counter()
                if out.finished:
                    end = time.perf_counter()
        end = end or time.perf_counter()
        first = first or end
        if i >= warmup:
            decode = (count - 1) / (end - first) if count > 1 and end > first else float("nan")
            runs.append({"ttft_s": first - start, "decode_tok_s": decode, "latency_s": end - start,
                         "output_tokens": count})
    if not runs:
        raise ValueError("No measured iterations: give more prompts than warm-up iterations.")
    med = {k: percentile([r[k] for r in runs], 50) for k in ("ttft_s", "decode_tok_s", "latency_s")}
    return LatencyResult(prompts[-1].num_tokens, output_len, med["ttft_s"], med["decode_tok_s"],
                         med["latency_s"], runs)
