"""Offline throughput of heron's native model plugin against the transformers fallback (``--model-impl``).

One random-weight Llama checkpoint (written to a temporary folder with a byte-level tokenizer) is served
twice in one process with the same attention backend, dtype and workload: after a warm-up batch each,
the two engines take turns (``--repeats`` rounds) over the same batches of ``--num-prompts`` distinct
prompts of ``--prompt-len`` tokens, decoded greedily for ``--max-tokens`` tokens each (EOS ignored),
all submitted at once. The table gives generated tokens per
second (the median over the rounds) and the fallback's speed relative to the native plugin.

    .venv/bin/python benchmarks/model_impl.py --hidden 256 --layers 4 --num-prompts 8 --max-tokens 64
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from typing import Any


def write_checkpoint(path: str, hidden: int, layers: int) -> None:
    from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

    config = tiny_config("llama", hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
                         max_position_embeddings=2048, initializer_range=0.02)
    tiny_checkpoint(config, path)
    save_tiny_tokenizer(path)


def build(path: str, impl: str, args: argparse.Namespace) -> Any:
    """The offline engine for ``--model-impl impl``, warmed up with a short batch."""
    from heron import LLM, SamplingParams

    llm = LLM(path, model_impl=impl, dtype=args.dtype, attention_backend=args.attention_backend)
    warm = [{"prompt_token_ids": [1 + i] * args.prompt_len} for i in range(2)]
    llm.generate(warm, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    return llm


def throughput(llm: Any, args: argparse.Namespace, seed: int) -> tuple[float, int]:
    """(generated tokens per second, tokens generated) for one batch of fresh prompts."""
    from heron import SamplingParams

    rng = random.Random(seed)
    batch = [{"prompt_token_ids": [rng.randrange(1, 256) for _ in range(args.prompt_len)]}
             for _ in range(args.num_prompts)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate(batch, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return tokens / elapsed, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--attention-backend", default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="measured batches per implementation (median reported)")
    args = ap.parse_args()
    impls = ("heron", "transformers")
    with tempfile.TemporaryDirectory() as path:
        write_checkpoint(path, args.hidden, args.layers)
        engines = {impl: build(path, impl, args) for impl in impls}
        runs: dict[str, list[tuple[float, int]]] = {impl: [] for impl in impls}
        for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            for impl in impls:
                runs[impl].append(throughput(engines[impl], args, seed=r))
    rows = [(impl, statistics.median(t for t, _ in runs[impl]), runs[impl][0][1]) for impl in impls]
    base = rows[0][1]
    print(f"llama hidden={args.hidden} layers={args.layers} dtype={args.dtype} backend={args.attention_backend}: "
          f"{args.num_prompts} prompts x {args.prompt_len} tokens, {args.max_tokens} generated each (greedy)")
    print(f"{'--model-impl':<14}{'tok/s':>10}{'tokens':>9}{'vs heron':>10}")
    for impl, rate, tokens in rows:
        print(f"{impl:<14}{rate:>10.1f}{tokens:>9}{rate / base:>10.2f}")
    print(f"(median of {args.repeats} interleaved batches each)")


if __name__ == "__main__":
    main()
