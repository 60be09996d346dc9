"""Per-token cost of structured outputs: the same batch decoded with and without a constraint.

All runs use the offline engine on the bundled SmolLM2 with the same batch size, prompt shape
and sampling (temperature 1.0, seeded), in one process, one after the other. Each run (and the
warm-up, which compiles the grammars) asks about its own people, so no run finds another's
prompts in the prefix cache; only the chat template's preamble is shared, cached alike for all:

- ``unconstrained``: free text, EOS ignored, every sample runs to ``max_tokens``;
- ``regex``: a constraint that cannot complete within ``max_tokens`` (``[a-z ]{2000}``), so every
  sample also runs to ``max_tokens``: same batch shape as the baseline, the difference is the
  per-token cost of filling and applying the token bitmask and advancing the matcher;
- ``json``: a JSON schema; samples end when their JSON is complete, so the batch thins out and
  time per token also includes that (reported for the realistic case).

    .venv/bin/python benchmarks/structured_overhead.py --num-prompts 16 --max-tokens 96
"""

from __future__ import annotations

import argparse
import json
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 5},
    },
    "required": ["name", "age", "tags"],
}


def run(llm, prompts, params) -> tuple[float, int]:
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - start, sum(len(c.token_ids) for o in outs for c in o.outputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    from heron import LLM, SamplingParams, StructuredOutputsParams

    llm = LLM(dtype=args.dtype)
    tok = llm.get_tokenizer()

    def prompts(run: str, n: int) -> list[dict]:
        texts = [tok.apply_chat_template([{"role": "user", "content": f"({run} #{i}) Describe a person as JSON."}],
                                         add_generation_prompt=True, tokenize=False) for i in range(n)]
        return [{"prompt_token_ids": tok.encode(t, add_special_tokens=False)} for t in texts]

    free = SamplingParams(temperature=1.0, seed=0, max_tokens=args.max_tokens, ignore_eos=True)
    constrained = SamplingParams(temperature=1.0, seed=0, max_tokens=args.max_tokens,
                                 structured_outputs=StructuredOutputsParams(json=SCHEMA))
    regex = SamplingParams(temperature=1.0, seed=0, max_tokens=args.max_tokens,
                           structured_outputs=StructuredOutputsParams(regex="[a-z ]{2000}"))
    runs = {"unconstrained": free, "regex": regex, "json": constrained}
    for name, params in runs.items():  # warm-up: grammars compiled and cached
        llm.generate(prompts(f"warm-up {name}", 2), params, use_tqdm=False)
    result: dict = {"batch": args.num_prompts, "max_tokens": args.max_tokens}
    for name, params in runs.items():
        seconds, tokens = run(llm, prompts(name, args.num_prompts), params)
        result[name] = {"tokens": tokens, "tok_s": round(tokens / seconds, 1),
                        "ms_per_token": round(1000 * seconds / tokens, 3)}
    base = result["unconstrained"]["ms_per_token"]
    for name in ("regex", "json"):
        result[name]["overhead_vs_unconstrained"] = f"{result[name]['ms_per_token'] / base - 1:+.1%}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
