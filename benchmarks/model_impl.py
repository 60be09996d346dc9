"""Offline throughput of heron's native model plugin against the transformers fallback (``--model-impl``).

One random-weight Llama checkpoint (written to a temporary folder with a byte-level tokenizer) is served
twice in one process, one after the other, with the same attention backend, dtype and workload: a warm-up
batch, then ``--num-prompts`` distinct prompts of ``--prompt-len`` tokens decoded greedily for
``--max-tokens`` tokens each (EOS ignored), all submitted at once. The table gives generated tokens per
second and the fallback's speed relative to the native plugin.

    .venv/bin/python benchmarks/model_impl.py --hidden 256 --layers 4 --num-prompts 8 --max-tokens 64
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time


def write_checkpoint(path: str, hidden: int, layers: int) -> None:
    from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

    config = tiny_config("llama", hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128),
                         max_position_embeddings=2048, initializer_range=0.02)
    tiny_checkpoint(config, path)
    save_tiny_tokenizer(path)


def throughput(path: str, impl: str, args: argparse.Namespace) -> tuple[float, int]:
    """(generated tokens per second, tokens generated) for ``--model-impl impl``."""
    from heron import LLM, SamplingParams

    llm = LLM(path, model_impl=impl, dtype=args.dtype, attention_backend=args.attention_backend)
    rng = random.Random(0)
    batch = [{"prompt_token_ids": [rng.randrange(1, 256) for _ in range(args.prompt_len)]}
             for _ in range(args.num_prompts + 2)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(batch[:2], params.clone(max_tokens=8), use_tqdm=False)  # warm-up, its prompts not reused
    start = time.perf_counter()
    outs = llm.generate(batch[2:], params, use_tqdm=False)
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as path:
        write_checkpoint(path, args.hidden, args.layers)
        rows = [(impl, *throughput(path, impl, args)) for impl in ("heron", "transformers")]
    base = rows[0][1]
    print(f"llama hidden={args.hidden} layers={args.layers} dtype={args.dtype} backend={args.attention_backend}: "
          f"{args.num_prompts} prompts x {args.prompt_len} tokens, {args.max_tokens} generated each (greedy)")
    print(f"{'--model-impl':<14}{'tok/s':>10}{'tokens':>9}{'vs heron':>10}")
    for impl, rate, tokens in rows:
        print(f"{impl:<14}{rate:>10.1f}{tokens:>9}{rate / base:>10.2f}")


if __name__ == "__main__":
    main()
