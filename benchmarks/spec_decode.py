"""Single-stream decode speed with and without speculative decoding (ngram prompt lookup).

The workload is the one prompt lookup is for: "repeat this code with one change". The bundled
SmolLM2-135M-Instruct gets a chat prompt holding a short Python module and is asked to write it
out again with one function renamed; greedy decoding, one request at a time, each prompt once per
engine. The same engine settings run twice in one process, without and with
``speculative_config={"method": "ngram", ...}``; each engine first serves a warm-up request with a
different module; the prefix cache is off by default (``--prefix-caching``). It prints tokens per
second of each run, the speed-up, the median step time (a one-token decode step of the run
without, a step verifying 1 + k tokens of the run with: steadier than tok/s on a busy machine),
the acceptance counters (mean acceptance length, vLLM's ``1 + accepted / drafts``) and whether the
greedy tokens are identical (``--strict`` fails when not). On the tiny fp32 test models they are
always identical (tests/core/engine/test_spec_decode.py); on SmolLM2 the linear kernels sum 1 + k
rows in another order than one row, which moves logprobs (as chunked prefill or a prefix-cache hit
do), so greedy outputs can part at a near-tie, with or without speculation; the script then
reports where each output first differs.

On cores other jobs share, pass ``--num-threads 1``: a GEMM split over two OpenMP threads waits
for whichever worker the OS has descheduled, and a verification step makes over a hundred of them
(docs/performance.md, "Speculative decoding", has measured numbers).

    .venv/bin/python benchmarks/spec_decode.py --max-tokens 256 --num-speculative-tokens 4 --num-threads 1
    .venv/bin/python benchmarks/spec_decode.py --max-tokens 256 --dtype bfloat16 --linear-kernel onednn
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

CODE = '''import math


def area_of_circle(radius):
    """Return the area of a circle."""
    return math.pi * radius ** 2


def perimeter_of_circle(radius):
    """Return the perimeter of a circle."""
    return 2 * math.pi * radius


def describe(radius):
    area = area_of_circle(radius)
    perimeter = perimeter_of_circle(radius)
    return f"radius={radius} area={area:.2f} perimeter={perimeter:.2f}"


if __name__ == "__main__":
    for r in (1, 2, 3):
        print(describe(r))
'''

TASKS = [("area_of_circle", "circle_area"), ("perimeter_of_circle", "circle_perimeter"), ("describe", "summary")]


def chat_prompt(tok, code: str, old: str, new: str) -> list[int]:
    text = (f"Here is a Python module:\n\n```python\n{code}```\n\nRewrite the whole module, exactly as it is, "
            f"but rename the function `{old}` to `{new}` everywhere. Reply with the code only.")
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=False)
    return tok.encode(rendered, add_special_tokens=False)


def time_steps(engine: Any) -> dict[str, list[float]]:
    """Wrap ``engine.step`` to record each step's seconds: ``draft`` (it verified drafts) or ``plain``."""
    times: dict[str, list[float]] = {"plain": [], "draft": []}
    step = engine.step

    def timed() -> list:
        drafts = engine.spec.stats.num_drafts if engine.spec is not None else 0
        start = time.perf_counter()
        out = step()
        took = time.perf_counter() - start
        verified = engine.spec is not None and engine.spec.stats.num_drafts > drafts
        times["draft" if verified else "plain"].append(took)
        return out

    engine.step = timed
    return times


def median_ms(values: list[float]) -> float | None:
    return round(1000 * statistics.median(values), 1) if values else None


def run(spec: dict | None, args: argparse.Namespace) -> tuple[list[list[int]], float, dict]:
    from heron import LLM, SamplingParams

    llm = LLM(dtype=args.dtype, max_num_seqs=1, speculative_config=spec, enable_prefix_caching=args.prefix_caching,
              attention_backend=args.attention_backend, linear_kernel=args.linear_kernel,
              num_threads=args.num_threads)
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    warm = chat_prompt(tok, CODE.replace("radius", "r").replace("circle", "disk"), "describe", "show")
    llm.generate([{"prompt_token_ids": warm}], params, use_tqdm=False)
    engine = llm.engine
    steps = time_steps(engine)
    before = engine.stats()
    outputs, elapsed = [], 0.0
    for old, new in TASKS:
        ids = chat_prompt(tok, CODE, old, new)
        start = time.perf_counter()
        out = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
        elapsed += time.perf_counter() - start
        outputs.append(list(out.outputs[0].token_ids))
    after = engine.stats()
    counters = {k: (v - before.get(k, 0)) if isinstance(v, int) else v for k, v in after.items()
                if k.startswith("spec_decode")}
    if counters.get("spec_decode_num_accepted_tokens_per_pos"):
        counters["spec_decode_num_accepted_tokens_per_pos"] = [
            a - b for a, b in zip(after["spec_decode_num_accepted_tokens_per_pos"],
                                  before["spec_decode_num_accepted_tokens_per_pos"], strict=True)]
    # a step's median: plain steps are decodes (one prefill each aside), draft steps verify 1 + k tokens
    counters["step_ms"] = {"plain": median_ms(steps["plain"]), "draft": median_ms(steps["draft"]),
                           "num_plain": len(steps["plain"]), "num_draft": len(steps["draft"])}
    counters["linear_kernel"] = engine.linear_kernel
    llm.shutdown()
    return outputs, elapsed, counters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--num-speculative-tokens", type=int, default=4)
    ap.add_argument("--prompt-lookup-min", type=int, default=2)
    ap.add_argument("--prompt-lookup-max", type=int, default=8)
    ap.add_argument("--dtype", default="float32", help="float32 (outputs asserted identical) or bfloat16/auto")
    ap.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--attention-backend", default="auto")
    ap.add_argument("--linear-kernel", default="auto", help="auto, dense, onednn, gguf, ...")
    ap.add_argument("--num-threads", type=int, default=None,
                    help="torch threads (default: physical cores); 1 on a machine other jobs share")
    ap.add_argument("--strict", action="store_true", help="fail unless the greedy tokens are identical")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    spec = {"method": "ngram", "num_speculative_tokens": args.num_speculative_tokens,
            "prompt_lookup_min": args.prompt_lookup_min, "prompt_lookup_max": args.prompt_lookup_max}
    base_out, base_s, base_counters = run(None, args)
    spec_out, spec_s, counters = run(spec, args)
    same = [next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), min(len(x), len(y)))
            for x, y in zip(base_out, spec_out, strict=True)]  # first differing position per output
    if spec_out != base_out:
        if args.strict:
            raise SystemExit(f"speculative decoding changed the greedy tokens (first differences at {same})")
        print(f"outputs first differ at tokens {same} of {[len(x) for x in base_out]}")
    tokens = sum(map(len, base_out))
    if sum(map(len, spec_out)) != tokens:  # outputs that parted (bf16) may differ in length: compare rates
        tokens_spec = sum(map(len, spec_out))
    else:
        tokens_spec = tokens
    drafts = counters.get("spec_decode_num_drafts", 0)
    spec_steps, kernel = counters.pop("step_ms"), counters.pop("linear_kernel")
    step_ms = {"decode": base_counters["step_ms"]["plain"], "draft": spec_steps["draft"],
               "num_decode": base_counters["step_ms"]["num_plain"], "num_draft": spec_steps["num_draft"]}
    result = {
        "dtype": args.dtype, "attention_backend": args.attention_backend, "linear_kernel": kernel,
        "num_threads": args.num_threads, "tokens": tokens, "identical": spec_out == base_out, "first_difference": same,
        "step_ms": step_ms,
        "baseline_tok_s": tokens / base_s, "ngram_tok_s": tokens_spec / spec_s,
        "speedup": (tokens_spec / spec_s) / (tokens / base_s), "speculative_config": spec,
        "mean_acceptance_length": 1 + counters.get("spec_decode_num_accepted_tokens", 0) / drafts if drafts else 1.0,
        **counters,
    }
    print(f"{tokens} tokens ({args.dtype}), greedy tokens identical: {spec_out == base_out}")
    print(f"without speculation: {result['baseline_tok_s']:.1f} tok/s")
    print(f"ngram (k={args.num_speculative_tokens}): {result['ngram_tok_s']:.1f} tok/s  "
          f"speed-up {result['speedup']:.2f}x, mean acceptance length {result['mean_acceptance_length']:.2f}")
    print(f"median step: {step_ms['decode']} ms decoding one token, {step_ms['draft']} ms verifying 1 + k "
          f"(kernel {kernel}, threads {args.num_threads or 'default'})")
    print(json.dumps(counters))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
