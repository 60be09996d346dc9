"""``heron bench throughput|latency|serve|embed``: measure the offline engine or any OpenAI-compatible server.

The measuring lives in :mod:`heron.bench`; this module only parses flags and prints results,
as a table or, with ``--json``, as one JSON object on stdout (progress bars go to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from dataclasses import asdict
from typing import Any

__all__ = ("add_parser",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the engine or a running server",
                       description="Benchmark heron's offline engine, or any OpenAI-compatible server.")
    bsub = p.add_subparsers(dest="bench_command", metavar="KIND", required=True)

    thr = bsub.add_parser("throughput", help="offline: N prompts at once through LLM.generate")
    _workload_args(thr, num_prompts=64, output_len=128)
    _engine_args(thr)
    thr.set_defaults(func=_throughput)

    lat = bsub.add_parser("latency", help="offline: one request at a time; time to first token, decode tok/s")
    _workload_args(lat, num_prompts=None, output_len=256)
    lat.add_argument("--num-iters", type=int, default=3, help="measured requests (default 3)")
    lat.add_argument("--num-iters-warmup", type=int, default=1, help="unmeasured requests first (default 1)")
    _engine_args(lat)
    lat.set_defaults(func=_latency)

    srv = bsub.add_parser("serve", help="drive a running OpenAI-compatible server with streaming requests")
    srv.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 URL")
    srv.add_argument("--model", default=None, help="model name to request (default: the first of GET /models)")
    srv.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    srv.add_argument("--concurrency", type=int, default=None, help="most requests in flight (default: no cap)")
    srv.add_argument("--request-rate", type=float, default=math.inf,
                     help="Poisson arrivals per second (default: inf, all at once)")
    _workload_args(srv, num_prompts=64, output_len=128)
    srv.add_argument("--tokenizer", default=None,
                     help="checkpoint whose tokenizer builds exact-length prompts (default: the bundled "
                          "SmolLM2); 'none' = synthetic words, lengths approximate")
    srv.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer key (env OPENAI_API_KEY)")
    srv.add_argument("--extra-body", type=json.loads, default={}, help='JSON merged into each request, e.g. \'{"top_k": 1}\'')
    srv.add_argument("--no-usage", action="store_true", help="do not send stream_options.include_usage")
    srv.add_argument("--warmup", type=int, default=1, help="short untimed requests first (default 1)")
    srv.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    srv.set_defaults(func=_serve)

    emb = bsub.add_parser("embed", help="embedding texts/s: offline LLM.embed, or a server's /v1/embeddings")
    emb.add_argument("--num-texts", type=int, default=512, help="texts embedded (default 512)")
    emb.add_argument("--words", type=int, default=24, help="average words per text (default 24)")
    emb.add_argument("--base-url", default=None, help="measure this server's /v1 URL instead of the offline engine")
    emb.add_argument("--served-model", default=None, help="model name to request (server runs; default: --model)")
    emb.add_argument("--concurrency", type=int, default=16, help="requests in flight (server runs; default 16)")
    emb.add_argument("--batch", type=int, default=1, help="texts per request (server runs; default 1)")
    emb.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer key (env OPENAI_API_KEY)")
    emb.add_argument("--seed", type=int, default=0)
    emb.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _engine_args(emb)
    emb.set_defaults(func=_embed)


def _workload_args(p: argparse.ArgumentParser, *, num_prompts: int | None, output_len: int) -> None:
    if num_prompts is not None:
        p.add_argument("--num-prompts", type=int, default=num_prompts, help=f"requests (default {num_prompts})")
    p.add_argument("--input-len", type=int, default=64, help="prompt tokens (default 64)")
    p.add_argument("--output-len", type=int, default=output_len, help=f"tokens generated per request, EOS ignored "
                                                                        f"(default {output_len})")
    p.add_argument("--prompt-file", default=None, help="prompts, one a line or JSON lines with 'prompt' (overrides --input-len)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint dir, .gguf file or cached HF id (default: bundled SmolLM2)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--num-threads", type=int, default=None, help="torch threads (default: physical cores)")
    p.add_argument("--model-impl", choices=["auto", "heron", "transformers", "vllm"], default="auto",
                   help="heron's plugin for the architecture or the transformers fallback (auto: plugin if any)")
    p.add_argument("--attention-backend", default="auto")
    p.add_argument("--linear-kernel", default="auto", help="auto, dense, onednn or int4")


def _build_llm(args: argparse.Namespace) -> Any:
    from heron import LLM

    return LLM(model=args.model, dtype=args.dtype, max_num_seqs=args.max_num_seqs,
               max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
               num_threads=args.num_threads, model_impl=args.model_impl, attention_backend=args.attention_backend,
               linear_kernel=args.linear_kernel, seed=args.seed)


def _prompts(args: argparse.Namespace, n: int, tokenizer: Any) -> list:
    from heron.bench import load_prompt_file, random_prompts

    if args.prompt_file:
        return load_prompt_file(args.prompt_file, n, tokenizer)
    return random_prompts(n, args.input_len, tokenizer, seed=args.seed)


def _throughput(args: argparse.Namespace) -> int:
    from heron.bench import run_throughput

    llm = _build_llm(args)
    prompts = _prompts(args, 2 + args.num_prompts, llm.get_tokenizer())  # one call: no shared blocks
    res = run_throughput(llm, prompts[2:], args.output_len, use_tqdm=not args.no_progress, warmup=prompts[:2])
    info = {"dtype": str(llm.engine.dtype).removeprefix("torch."), "threads": _threads()}
    if args.json:
        return _print_json({"kind": "throughput", **info, **asdict(res)})
    print(f"{res.num_requests} requests, {res.input_tokens} prompt + {res.output_tokens} output tokens, "
          f"dtype {info['dtype']}, {info['threads']} threads")
    _rows([("seconds", res.seconds, ".2f"), ("requests/s", res.requests_per_s, ".2f"),
           ("output tok/s", res.output_tok_s, ".1f"), ("total tok/s", res.total_tok_s, ".1f")])
    return 0


def _latency(args: argparse.Namespace) -> int:
    from heron.bench import run_latency

    llm = _build_llm(args)
    prompts = _prompts(args, args.num_iters_warmup + args.num_iters, llm.get_tokenizer())
    res = run_latency(llm, prompts, args.output_len, warmup=args.num_iters_warmup, use_tqdm=not args.no_progress)
    info = {"dtype": str(llm.engine.dtype).removeprefix("torch."), "threads": _threads()}
    if args.json:
        return _print_json({"kind": "latency", **info, **asdict(res)})
    print(f"1 request at a time, {res.input_len} prompt -> {res.output_len} output tokens, "
          f"median of {len(res.iterations)}, dtype {info['dtype']}, {info['threads']} threads")
    _rows([("time to first token (ms)", res.ttft_s * 1000, ".1f"), ("decode tok/s", res.decode_tok_s, ".1f"),
           ("request latency (s)", res.latency_s, ".2f")])
    return 0


def _serve(args: argparse.Namespace) -> int:
    from heron.bench import ServeConfig, load_tokenizer, run_serve

    tokenizer = None
    if (args.tokenizer or "").lower() != "none":
        print("heron bench: loading the tokenizer that sizes the prompts ...", file=sys.stderr)
        try:
            tokenizer = load_tokenizer(args.tokenizer)
        except Exception as err:  # ModelNotFoundError and friends: fall back, but say so
            print(f"heron bench: no tokenizer ({err}); prompt lengths are approximate "
                  "(pass --tokenizer PATH, or --tokenizer none to silence this).", file=sys.stderr)
    try:
        cfg = ServeConfig(base_url=args.base_url, model=args.model, endpoint=args.endpoint,
                          output_len=args.output_len, concurrency=args.concurrency,
                          request_rate=args.request_rate, api_key=args.api_key, extra_body=args.extra_body,
                          include_usage=not args.no_usage, timeout_s=args.timeout, seed=args.seed)
    except ValueError as err:
        print(f"heron bench serve: {err}", file=sys.stderr)
        return 2
    prompts = _prompts(args, args.warmup + args.num_prompts, tokenizer)
    try:
        res = asyncio.run(run_serve(prompts[args.warmup:], cfg, warmup=prompts[:args.warmup],
                                    use_tqdm=not args.no_progress))
    except Exception as err:  # cannot reach the server, /models fails, ...
        print(f"heron bench serve: {type(err).__name__}: {err} (is a server running at {args.base_url}?)",
              file=sys.stderr)
        return 1
    if args.json:
        _print_json({"kind": "serve", "base_url": args.base_url, "endpoint": args.endpoint, **asdict(res)})
        return 1 if res.errors == res.num_requests else 0
    limit = f"concurrency {res.concurrency}" if res.concurrency else "no concurrency cap"
    rate = "all at once" if math.isinf(res.request_rate) else f"{res.request_rate:g} req/s"
    print(f"{res.model} at {args.base_url}: {res.num_requests} requests, {limit}, {rate}")
    _rows([("completed / errors", f"{res.completed} / {res.errors}", ""),
           ("short of --output-len", res.short, "d"), ("duration (s)", res.duration_s, ".2f"),
           ("prompt / output tokens", f"{res.input_tokens} / {res.output_tokens}", ""),
           ("requests/s", res.requests_per_s, ".2f"), ("output tok/s", res.output_tok_s, ".1f"),
           ("total tok/s", res.total_tok_s, ".1f")])
    print(f"{'(ms)':<26}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name, s in (("time to first token", res.ttft_ms), ("inter-token latency", res.itl_ms),
                    ("time per output token", res.tpot_ms), ("request latency", res.e2e_ms)):
        print(f"{name:<26}" + "".join(f"{s[k]:>9.1f}" for k in ("mean", "p50", "p90", "p99")))
    for err in res.error_samples:
        print(f"error: {err}", file=sys.stderr)
    return 1 if res.errors == res.num_requests else 0


def _embed(args: argparse.Namespace) -> int:
    from heron.bench import run_embed_offline, run_embed_serve, sentence_texts

    texts = sentence_texts(args.num_texts + 8, args.words, seed=args.seed)
    warmup, texts = texts[:8], texts[8:]
    if args.base_url:
        model = args.served_model or args.model
        if not model:
            print("heron bench embed: name the served model with --served-model", file=sys.stderr)
            return 2
        res = run_embed_serve(args.base_url.rstrip("/"), model, texts, concurrency=args.concurrency,
                              batch=args.batch, api_key=args.api_key, warmup=warmup)
        where = f"{args.base_url}, concurrency {args.concurrency}, {args.batch} text(s) a request"
    else:
        from heron import LLM

        llm = LLM(model=args.model, runner="pooling", dtype=args.dtype, max_num_seqs=args.max_num_seqs,
                  max_num_batched_tokens=args.max_num_batched_tokens, num_threads=args.num_threads,
                  model_impl=args.model_impl, attention_backend=args.attention_backend,
                  linear_kernel=args.linear_kernel, seed=args.seed)
        res = run_embed_offline(llm, texts, warmup=warmup)
        where = f"offline, dtype {str(llm.engine.dtype).removeprefix('torch.')}, {_threads()} threads"
    if args.json:
        return _print_json({"kind": "embed", "where": where, **asdict(res)})
    print(f"{res.num_texts} texts of ~{args.words} words, {where}")
    _rows([("seconds", res.seconds, ".2f"), ("texts/s", res.texts_per_s, ".1f"), ("errors", res.errors, "d")])
    return 1 if res.errors else 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _rows(rows: list[tuple[str, Any, str]]) -> None:
    for name, value, fmt in rows:
        print(f"{name:<26}{format(value, fmt):>12}")


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _print_json(obj: dict[str, Any]) -> int:
    print(json.dumps(_finite(obj), indent=2))
    return 0
