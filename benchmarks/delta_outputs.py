"""What the engine's per-step outputs cost on one long completion: time outside the forward.

One request on the offline engine (bundled SmolLM2 unless ``--model``), EOS ignored, so it runs to
``--max-tokens`` (4096 by default) with ``logprobs=5``. Every output goes through the server's
``heron.server.streams.iterate_choices`` (what a streaming route consumes), driven step by step in
this thread. Reported (CPU seconds of this thread, so a busy machine blurs them less than wall
time; torch runs on ``--threads`` threads, 1 by default):

- ``forward_cpu_s``: inside ``ModelRunner.execute`` (the model; the same before and after);
- ``outputs_cpu_s``: inside ``Request.output()``, building the step's outputs (cumulative copies
  before, deltas after);
- ``engine_other_cpu_s``: the rest of ``LLMEngine.step()`` (scheduling, sampling, bookkeeping);
- ``consumer_cpu_s``: ``iterate_choices`` turning outputs into per-choice deltas;
- ``handed_out_items``: list elements (token ids + logprob entries) in all outputs handed out
  (cumulative outputs copy the whole lists every step: O(tokens^2); deltas: O(tokens));
- ``e2e_s`` (wall) and ``overhead_us_per_step``: (CPU time - forward) / steps.

Runs on whatever ``heron`` is importable, so the same script measures an older tree too::

    .venv/bin/python benchmarks/delta_outputs.py --max-tokens 4096
    PYTHONPATH=/tmp/heron-before-pkgs .venv/bin/python benchmarks/delta_outputs.py   # older code

(``/tmp/heron-before-pkgs`` holds ``heron`` and ``heron_plugins`` links to an older tree's
``core/`` and ``plugins/``, e.g. from ``git archive HEAD | tar -x -C /tmp/heron-before``.)
``--fake-forward`` replaces the model by fixed random logits (a ``[rows, vocab]`` tensor), so the
run takes seconds and times exactly what surrounds the forward. A short warm-up request with a
different prompt runs first (not timed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

__all__ = ("main", "measure")

_cpu = time.thread_time


def _fake_execute(vocab: int) -> Any:
    """A stand-in for the model's forward: fixed random logits, so only the rest is timed."""
    import torch

    from heron.engine.model_runner import StepLogits

    row = torch.randn(1, vocab, generator=torch.Generator().manual_seed(0))

    def execute(sched: Any, full_logits_for: set[int], hidden_for: frozenset[int] = frozenset()) -> Any:
        rows = sum(1 for item in sched.scheduled if item.samples)
        return StepLogits(row.expand(rows, vocab).clone(), {})

    return execute


def _timed(fn: Any, total: list[float]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = _cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += _cpu() - start

    return wrapper


def measure(engine: Any, prompt_ids: list[int], max_tokens: int, logprobs: int, *,
            fake_forward: bool = False) -> dict[str, float]:
    """Run one request to ``max_tokens`` through ``iterate_choices``; return the timings."""
    from heron import SamplingParams
    from heron.engine.request import Request
    from heron.server.streams import RequestTimer, iterate_choices

    forward, building = [0.0], [0.0]
    real_execute, real_output = engine.model_runner.execute, Request.output
    engine.model_runner.execute = _timed(_fake_execute(engine.vocab_size) if fake_forward else real_execute, forward)
    Request.output = _timed(real_output, building)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=logprobs)
    counts = {"steps": 0, "items": 0, "consumer": 0.0, "step_total": 0.0}

    async def outputs():
        engine.add_request("bench", None, params, prompt_token_ids=prompt_ids)
        while engine.has_unfinished():
            start = _cpu()
            outs = engine.step()
            counts["step_total"] += _cpu() - start
            counts["steps"] += 1
            for out in outs:
                for comp in out.outputs:
                    counts["items"] += len(comp.token_ids) + len(comp.logprobs or ())
                mark = _cpu()
                yield out
                counts["consumer"] += _cpu() - mark  # suspended: the consumer's time

    async def consume() -> int:
        tokens = 0
        async for _out, deltas in iterate_choices(outputs(), RequestTimer()):
            tokens += sum(len(d.token_ids) for d in deltas)
        return tokens

    try:
        start, cpu_start = time.perf_counter(), _cpu()
        tokens = asyncio.run(consume())
        e2e, cpu = time.perf_counter() - start, _cpu() - cpu_start
    finally:
        engine.model_runner.execute, Request.output = real_execute, real_output
    steps = counts["steps"]
    return {
        "tokens": tokens,
        "steps": steps,
        "e2e_s": round(e2e, 3),
        "forward_cpu_s": round(forward[0], 3),
        "outputs_cpu_s": round(building[0], 3),
        "engine_other_cpu_s": round(counts["step_total"] - forward[0] - building[0], 3),
        "consumer_cpu_s": round(counts["consumer"], 3),
        "overhead_us_per_step": round((cpu - forward[0]) / max(steps, 1) * 1e6, 1),
        "handed_out_items": counts["items"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--logprobs", type=int, default=5)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least noise on a busy machine)")
    ap.add_argument("--fake-forward", action="store_true",
                    help="replace the model's forward by fixed logits: times only what is outside it")
    args = ap.parse_args()
    import heron
    from heron.engine import LLMEngine

    engine = LLMEngine(model=args.model, dtype=args.dtype, max_model_len=args.max_tokens + 64,
                       num_threads=args.threads)
    tok = engine.tokenizer
    warm = tok.encode("Count slowly from one to fifty.", add_special_tokens=False)
    measure(engine, warm, 32, args.logprobs, fake_forward=args.fake_forward)
    prompt = tok.encode("Write a very long story about a heron.", add_special_tokens=False)
    result = {"heron": heron.__file__, "max_tokens": args.max_tokens, "logprobs": args.logprobs,
              "fake_forward": args.fake_forward, "threads": args.threads,
              **measure(engine, prompt, args.max_tokens, args.logprobs, fake_forward=args.fake_forward)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
