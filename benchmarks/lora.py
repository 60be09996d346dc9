"""What serving through a LoRA adapter costs per generated token, against the base model, at batch 1 and 16.

One engine (the bundled SmolLM2-135M-Instruct by default, heron's default dtype) with
``enable_lora=True`` serves the same workload twice per round: ``--batch`` fresh prompts of
``--prompt-len`` tokens decoded greedily for ``--max-tokens`` tokens each (EOS ignored), once on
the base model and once through an adapter of rank ``--rank`` on all seven projections (q, k, v,
o, gate, up, down: a PEFT folder with random non-zero weights written to a temporary directory).
The two alternate for ``--repeats`` rounds after a warm-up; the table gives the median time per
generated token (wall time / tokens of the batch) and the adapter's cost relative to the base.

    .venv/bin/python benchmarks/lora.py --batch 1 16
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_adapter(folder: Path, config: Any, rank: int, seed: int = 0) -> None:
    """A PEFT adapter folder for ``config`` (an HF Llama-style config) with random A and B."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    hidden, inter = config.hidden_size, config.intermediate_size
    head = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    dims = {"q_proj": (hidden, config.num_attention_heads * head), "k_proj": (hidden, config.num_key_value_heads * head),
            "v_proj": (hidden, config.num_key_value_heads * head), "o_proj": (config.num_attention_heads * head, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for name in TARGETS:
            kind = "self_attn" if name in TARGETS[:4] else "mlp"
            stem = f"base_model.model.model.layers.{layer}.{kind}.{name}"
            fan_in, fan_out = dims[name]
            tensors[f"{stem}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) * fan_in ** -0.5
            tensors[f"{stem}.lora_B.weight"] = torch.randn(fan_out, rank, generator=gen) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(TARGETS),
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "task_type": "CAUSAL_LM"}))


def per_token(llm: Any, args: argparse.Namespace, batch: int, lora: Any, seed: int) -> float:
    """Seconds per generated token for one batch of fresh prompts (through ``lora`` or the base)."""
    from heron import SamplingParams

    rng = random.Random(seed)
    prompts = [{"prompt_token_ids": [rng.randrange(100, 10000) for _ in range(args.prompt_len)]} for _ in range(batch)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
    elapsed = time.perf_counter() - start
    return elapsed / sum(len(o.outputs[0].token_ids) for o in outs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from heron import LLM
    from heron.lora import LoRARequest

    llm = LLM(args.model, dtype=args.dtype, enable_lora=True, max_loras=1, max_lora_rank=args.rank,
              enable_prefix_caching=False, max_num_seqs=max(args.batch))
    with tempfile.TemporaryDirectory() as tmp:
        write_adapter(Path(tmp) / "adapter", llm.engine.checkpoint.hf_config, args.rank)
        lora = LoRARequest("bench", 1, str(Path(tmp) / "adapter"))
        for warm in (None, lora):
            per_token(llm, args, 2, warm, seed=-1)
        rows = []
        for batch in args.batch:
            base, adapted = [], []
            for r in range(args.repeats):
                base.append(per_token(llm, args, batch, None, seed=r))
                adapted.append(per_token(llm, args, batch, lora, seed=r))
            rows.append((batch, statistics.median(base), statistics.median(adapted)))
    print(f"model {args.model or 'SmolLM2-135M-Instruct'}, dtype {llm.engine.dtype}, rank {args.rank}, "
          f"{args.prompt_len}-token prompts, {args.max_tokens} tokens each, median of {args.repeats}")
    print("| batch | base ms/token | adapter ms/token | adapter / base |")
    print("|---:|---:|---:|---:|")
    for batch, b, a in rows:
        print(f"| {batch} | {b * 1e3:.2f} | {a * 1e3:.2f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
