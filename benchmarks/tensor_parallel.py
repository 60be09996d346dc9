"""Offline decode speed with tensor parallelism: ``tensor_parallel_size`` 2 against 1, in one run.

The bundled SmolLM2-135M-Instruct (or ``--model``) in fp32 and bf16; for each dtype and size, a
batch of ``--batch`` short prompts decodes ``--tokens`` tokens each (EOS ignored, greedy). The
prefill step is not timed: ``decode_tok_s`` = tokens generated after it / wall time of the decode
steps. Each size's greedy tokens are compared with size 1's (``same_tokens``; bf16 may differ
where two logits tie within rounding, since the sums are ordered differently).

On a 2-core machine tensor parallelism is expected to be slower: two ranks share the same cores
and add two all-reduces per layer plus a step broadcast; the point is the path to machines (or
GPUs) where one rank per device adds memory bandwidth::

    .venv/bin/python benchmarks/tensor_parallel.py --json tp.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ("main", "measure")


def measure(model: str | None, dtype: str, tp: int, batch: int, tokens: int) -> dict[str, Any]:
    """One engine: start-up time, decode tokens per second, greedy tokens of the batch."""
    from heron import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model, dtype=dtype, tensor_parallel_size=tp, max_num_seqs=batch, num_kv_blocks=512)
    started = time.perf_counter() - start
    try:
        engine = llm.engine
        params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
        llm.generate(["Warm-up: say hello."], SamplingParams(max_tokens=4), use_tqdm=False)
        prompts = [f"Story {i}: once upon a time, in a small village," for i in range(batch)]
        for i, prompt in enumerate(prompts):
            engine.add_request(f"r{i}", prompt, params)
        engine.step()  # the batch's prefill (and first tokens): not timed
        first = engine.num_generated_tokens
        t0 = time.perf_counter()
        outs: dict[str, list[int]] = {}
        while engine.has_unfinished():
            for out in engine.step():
                outs.setdefault(out.request_id, []).extend(out.outputs[0].token_ids)
        elapsed = time.perf_counter() - t0
        decoded = engine.num_generated_tokens - first
    finally:
        llm.shutdown()
    return {"dtype": dtype, "tp": tp, "batch": batch, "startup_s": round(started, 2),
            "decode_tok_s": round(decoded / elapsed, 1), "decode_s": round(elapsed, 2),
            "tokens": [outs.get(f"r{i}", []) for i in range(batch)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--sizes", default="1,2", help="tensor parallel sizes, the first is the reference")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    rows = []
    for dtype in args.dtypes.split(","):
        for batch in map(int, args.batches.split(",")):
            reference = None
            for tp in map(int, args.sizes.split(",")):
                row = measure(args.model, dtype, tp, batch, args.tokens)
                reference = reference if reference is not None else row["tokens"]
                row["same_tokens"] = row.pop("tokens") == reference
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
