"""Offline throughput, side by side: heron's LLM vs HF transformers' ``generate``.

Same model (the bundled SmolLM2-135M-Instruct GGUF, dequantized by both), same prompts, same
number of output tokens (EOS ignored), same dtype, in one run. transformers gets its best
batched setting among ``--hf-batch-sizes``. Prints both figures and the ratio.

    .venv/bin/python benchmarks/throughput.py --num-prompts 64 --input-len 64 --output-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _prompts(tok, n: int, input_len: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Two warm-up prompts and ``n - 2`` timed ones, no two sharing a prefix-cache block."""
    from heron.bench import random_prompts

    ids = [p.token_ids for p in random_prompts(n, input_len, tok, seed=seed)]
    return ids[:2], ids[2:]


def run_heron(model: str | None, prompts, warmup, output_len: int, dtype: str) -> dict:
    from heron import LLM, SamplingParams

    llm = LLM(model=model, dtype=dtype)
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    # warm-up prompts the timed run does not reuse: their blocks must not sit in the prefix cache
    llm.generate(warmup, SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"engine": "heron", "dtype": dtype, "tokens": tokens, "seconds": elapsed, "tok_s": tokens / elapsed}


def load_transformers(path: str, dtype: str):
    """transformers' model of the GGUF (dequantized to ``dtype``), after one short untimed generate."""
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(path)
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype).eval()
    with torch.inference_mode():
        model.generate(torch.tensor([[1, 2, 3, 4]]), max_new_tokens=4, do_sample=False, pad_token_id=_pad(model))
    return model


def _pad(model) -> int:
    return model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0


def time_transformers(model, prompts, output_len: int, dtype: str, batch_size: int) -> dict:
    """``generate`` over ``prompts`` (equal lengths) in batches of ``batch_size``, timed."""
    tokens = 0
    with torch.inference_mode():
        start = time.perf_counter()
        for i in range(0, len(prompts), batch_size):
            batch = torch.tensor(prompts[i : i + batch_size])  # equal lengths: no padding needed
            out = model.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=output_len,
                                 min_new_tokens=output_len, do_sample=False, pad_token_id=_pad(model))
            tokens += (out.shape[1] - batch.shape[1]) * batch.shape[0]
    elapsed = time.perf_counter() - start
    return {"engine": "transformers", "dtype": dtype, "batch_size": batch_size, "tokens": tokens,
            "seconds": elapsed, "tok_s": tokens / elapsed}


def run_transformers(path: str, prompts, output_len: int, dtype: str, batch_size: int) -> dict:
    return time_transformers(load_transformers(path, dtype), prompts, output_len, dtype, batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the bundled SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--hf-batch-sizes", default="32,64")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from heron.loader import load_checkpoint

    ckpt = load_checkpoint(args.model)
    warmup, prompts = _prompts(ckpt.tokenizer, 2 + args.num_prompts, args.input_len)
    results = []
    for dtype in args.dtypes.split(","):
        results.append(run_heron(args.model, prompts, warmup, args.output_len, dtype))
        for bs in (int(b) for b in args.hf_batch_sizes.split(",")):
            results.append(run_transformers(str(ckpt.path), prompts, args.output_len, dtype, bs))
    best = {e: max((r for r in results if r["engine"] == e), key=lambda r: r["tok_s"]) for e in ("heron", "transformers")}
    if args.json:
        print(json.dumps({"results": results, "best": best}, indent=2))
        return
    print(f"{args.num_prompts} prompts x {args.input_len} in / {args.output_len} out, torch threads={torch.get_num_threads()}")
    print(f"{'engine':<14}{'dtype':<10}{'batch':>6}{'tokens':>9}{'seconds':>9}{'tok/s':>9}")
    for r in results:
        print(f"{r['engine']:<14}{r['dtype']:<10}{r.get('batch_size', '-')!s:>6}{r['tokens']:>9}{r['seconds']:>9.2f}{r['tok_s']:>9.1f}")
    ratio = best["heron"]["tok_s"] / best["transformers"]["tok_s"]
    print(f"best heron {best['heron']['tok_s']:.1f} tok/s ({best['heron']['dtype']}) vs best transformers "
          f"{best['transformers']['tok_s']:.1f} tok/s ({best['transformers']['dtype']}, batch "
          f"{best['transformers']['batch_size']}): ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
