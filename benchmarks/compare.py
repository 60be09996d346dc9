"""heron vs HF transformers vs llama.cpp (llama-server, llama-cpp-python's server), side by side.

One run, one model (the bundled SmolLM2-135M-Instruct: llama.cpp runs its Q4_1 GGUF as is, heron
loads the same file with its default kernels, transformers dequantizes it), one workload of random
distinct prompts (the same token ids / text everywhere), EOS ignored so every request makes exactly
the asked tokens. heron runs with its defaults (``--heron-linear-kernel`` changes that):

- offline throughput: heron's ``LLM.generate`` vs transformers' ``generate`` (its GGUF path,
  ``from_pretrained(..., gguf_file=...)``, dequantized to each of ``--dtypes``, best of those and
  of the batch sizes), each also as a fraction of the machine's bf16 matmul compute limit; both in
  one process, ``--offline-rounds`` interleaved rounds of new prompts, each setting's best round;
- serving: ``heron serve``, ``llama-server -np C`` (restarted per level) and llama-cpp-python's
  server, driven by ``heron bench serve``'s load generator at each concurrency level; the resident
  memory of each server's process tree is sampled throughout;
- single stream: decode tok/s and time to first token of one request at a time (the targets' figures:
  ``heron serve`` and llama-server up side by side, each prompt sent to one then the other);
- long prompt: time to first token of ``--long-prompt-len``-token prompts (``max_tokens`` 1, one at
  a time, distinct prompts so no prefix cache helps), heron vs llama-server;
- memory: ``heron serve`` and llama-server at the same parallel slots and context length
  (``--memory-slots``, ``--memory-ctx``), one load of that many streams, the resident memory of
  each whole process tree (``memory.py``'s ``measure_memory``; the target uses the peak, the sum
  of each process's ``VmHWM``);
- speculative: ``heron serve`` with and without ``--speculative-config`` (ngram) up side by side,
  on ``spec_decode.py``'s copy workload, one greedy request at a time, each prompt sent to one then
  the other: tok/s and whether the tokens are identical.

Each part has a ``--skip`` name. Baselines that are not installed are skipped with instructions
to build them. Writes compare.json, compare.md and compare.png to --out-dir, and with --doc a full
docs page (sections of an existing page that this script does not write are kept).

    .venv/bin/python benchmarks/compare.py --llama-server /path/to/llama-server \\
        --llama-cpp-python /path/to/venv/bin/python --doc docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import report
import servers
import torch
from throughput import load_transformers, time_transformers

from heron.bench import Prompt, ServeConfig, random_prompts, run_latency, run_serve, run_throughput
from heron.engine.config import physical_cores
from heron.loader import default_model_path, load_checkpoint

PARTS = ("heron-offline", "transformers", "heron-serve", "llama-server", "llama-cpp-python", "long-prompt",
         "memory", "speculative")
NGRAM = '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 8}'


def machine_info() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    torch.set_num_threads(physical_cores())
    return {"cpu": cpu, "physical_cores": physical_cores(), "logical_cpus": len(os.sched_getaffinity(0)),
            "ram_gib": round(mem / 2**20, 1), "torch": torch.__version__, "python": platform.python_version(),
            "isa": " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags),
            "bf16_gflops": matmul_gflops(torch.bfloat16), "fp32_gflops": matmul_gflops(torch.float32)}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Sustained square-matmul GFLOP/s with torch's CPU kernels, all physical cores."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process has used, those this process and its waited-for children used)."""
    hz = os.sysconf("SC_CLK_TCK")
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(cpu[:8]) - cpu[3] - cpu[4]  # user..steal, less idle and iowait (guest is inside user)
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    ours = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return busy / hz, ours / hz


def section(res: dict[str, Any], name: str | None) -> None:
    """Close the running section, recording the CPU share that other processes took during it,
    and open ``name``. On a 2-core machine other processes slow every engine, spinning thread
    pools (torch's, llama.cpp's) most, so the share is reported beside the results."""
    now = (time.monotonic(), *cpu_seconds())
    if "_mark" in res:
        since = res.pop("_mark")
        wall = max(now[0] - since[0], 1e-9)
        other = max((now[1] - since[1]) - (now[2] - since[2]), 0.0)
        res.setdefault("other_cpu", {})[res.pop("_section")] = round(other / wall, 2)
    if name is not None:
        res["_mark"], res["_section"] = now, name
        print(f"== {name}", flush=True)


def save(res: dict[str, Any], out: Path) -> None:
    """Write what is measured so far (a run killed half-way still leaves its finished parts)."""
    (out / "compare.partial.json").write_text(json.dumps(res, indent=2, default=str))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class Workload:
    """The prompts every engine gets (random word tokens, no two sharing a prefix-cache block)."""

    gguf: str
    tok: Any
    warmup: list[Prompt]  # 2 offline warm-up prompts
    prompts: list[Prompt]  # the offline ones (the first round's)
    rounds: list[list[Prompt]]  # the offline prompts of each round, none sharing a prefix with another
    by_level: dict[int, list[Prompt]]  # per concurrency level: one warm-up prompt, then the timed ones
    singles: list[Prompt]  # one warm-up prompt, then the single-stream ones
    long: list[Prompt]  # one warm-up prompt, then the long-prompt TTFT ones
    eos_bias: dict[str, int]


def build_workload(args: argparse.Namespace, levels: list[int]) -> Workload:
    ckpt = load_checkpoint(None)
    tok = ckpt.tokenizer
    n = args.num_prompts
    both = random_prompts(2 + n * args.offline_rounds, args.input_len, tok, seed=0)
    n_for = {c: min(max(args.requests_per_level * c, args.min_requests), args.max_requests) for c in levels}
    return Workload(
        gguf=default_model_path(), tok=tok, warmup=both[:2], prompts=both[2:2 + n],
        rounds=[both[2 + r * n:2 + (r + 1) * n] for r in range(args.offline_rounds)],
        by_level={c: random_prompts(n_for[c] + 1, args.input_len, tok, seed=1000 + c) for c in levels},
        singles=random_prompts(args.single_requests + 1, args.input_len, tok, seed=7),
        long=random_prompts(args.long_prompt_reps + 1, args.long_prompt_len, tok, seed=3000),
        eos_bias={str(t): -100 for t in ckpt.eos_token_ids})


def heron_flags(args: argparse.Namespace) -> list[str]:
    """The flags that move ``heron serve`` off its defaults: only --heron-dtype / --heron-linear-kernel."""
    return ([] if args.heron_dtype == "auto" else ["--dtype", args.heron_dtype]) + (
        [] if args.heron_linear_kernel == "auto" else ["--linear-kernel", args.heron_linear_kernel])


def heron_cmd(args: argparse.Namespace, port: int, max_num_seqs: int) -> list[str]:
    """``heron serve`` with its defaults, but for the slots (and :func:`heron_flags`)."""
    return [sys.executable, "-m", "heron.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--max-num-seqs", str(max_num_seqs), *heron_flags(args)]


def llama_cmd(binary: str, gguf: str, slots: int, ctx: int, port: int, extra: list[str]) -> list[str]:
    return [binary, "-m", gguf, "-t", str(physical_cores()), "-np", str(slots), "-c", str(ctx),
            "--host", "127.0.0.1", "--port", str(port), "--no-webui", *extra]


# -- measurements against a running server ---------------------------------------------------

def serve_level(base_url: str, prompts: list, output_len: int, concurrency: int, extra: dict) -> dict[str, Any]:
    cfg = ServeConfig(base_url=base_url, output_len=output_len, concurrency=concurrency, extra_body=extra)
    res = asdict(asyncio.run(run_serve(prompts[1:], cfg, warmup=prompts[:1])))
    print(f"    concurrency {concurrency:>3}: {res['output_tok_s']:7.1f} tok/s, TTFT p50 "
          f"{res['ttft_ms']['p50'] / 1000:6.2f} s, {res['output_tokens']} tokens, {res['errors']} errors, "
          f"{res['short']} short", flush=True)
    return res


def single_stream(base_url: str, prompts: list, output_len: int, extra: dict) -> dict[str, Any]:
    res = serve_level(base_url, prompts, output_len, 1, extra)
    return {"decode_tok_s": 1000 / res["tpot_ms"]["p50"], "ttft_ms": res["ttft_ms"]["p50"],
            "output_tokens": res["output_tokens"], "requests": res["completed"]}


def long_prompt_ttft(base_url: str, prompts: list[Prompt], extra: dict) -> dict[str, Any]:
    """Time to first token of each long prompt, one at a time, ``max_tokens`` 1 (after one untimed)."""
    cfg = ServeConfig(base_url=base_url, output_len=1, concurrency=1, extra_body=extra)
    r = asyncio.run(run_serve(prompts[1:], cfg, warmup=prompts[:1], use_tqdm=False))
    print(f"    long prompt ({r.input_tokens // max(r.completed, 1)} tokens): TTFT p50 "
          f"{r.ttft_ms['p50']:.0f} ms over {r.completed} requests, {r.errors} errors", flush=True)
    return {"prompt_tokens": r.input_tokens // max(r.completed, 1), "requests": r.num_requests,
            "completed": r.completed, "errors": r.errors, "ttft_ms": r.ttft_ms, "error_samples": r.error_samples}


def spec_counters(client: httpx.Client, base_url: str) -> tuple[float, float]:
    """(drafts, accepted draft tokens) from heron's /metrics (0, 0 when it has none)."""
    text = client.get(base_url.removesuffix("/v1") + "/metrics").text
    found = dict(re.findall(r"^heron:(spec_decode_num_drafts|spec_decode_num_accepted_tokens)_total\{[^}]*\} (\S+)$",
                            text, flags=re.M))
    return float(found.get("spec_decode_num_drafts", 0)), float(found.get("spec_decode_num_accepted_tokens", 0))


def copy_complete(client: httpx.Client, base_url: str, model: str, ids: list[int],
                  max_tokens: int) -> tuple[list[int], float]:
    """One greedy completion of the token-id prompt: (output token ids, seconds)."""
    body = {"model": model, "prompt": ids, "max_tokens": max_tokens, "temperature": 0.0, "return_token_ids": True}
    start = time.perf_counter()
    resp = client.post(base_url + "/completions", json=body)
    resp.raise_for_status()
    return resp.json()["choices"][0]["token_ids"], time.perf_counter() - start


def hf_single_stream(model: Any, ids: list[int], output_len: int, dtype: str) -> dict[str, Any]:
    """transformers, batch 1: decode tok/s from the time of ``output_len`` tokens minus that of 1."""
    x = torch.tensor([ids])
    kw = {"attention_mask": torch.ones_like(x), "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        model.generate(x, max_new_tokens=4, **kw)
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw)
        t1 = time.perf_counter()
        model.generate(x, max_new_tokens=output_len, min_new_tokens=output_len, **kw)
        t2 = time.perf_counter()
    return {"decode_tok_s": (output_len - 1) / ((t2 - t1) - (t1 - t0)), "ttft_ms": (t1 - t0) * 1000, "dtype": dtype}


@contextlib.contextmanager
def servers_up(res: dict[str, Any], part: str) -> Iterator[list[servers.Server]]:
    """A list for the servers a part starts: all stopped at the end; a failure is noted, not raised,
    so the other parts' numbers are kept."""
    started: list[servers.Server] = []
    try:
        yield started
    except Exception as err:  # noqa: BLE001 - keep the other parts' numbers
        res["notes"].append(f"{part}: failed: {err}".splitlines()[0])
        print(f"{part} failed: {err}", file=sys.stderr)
    finally:
        for server in started:
            server.stop()


# -- the parts ---------------------------------------------------------------------------------

def run_offline(args: argparse.Namespace, wl: Workload, res: dict[str, Any]) -> None:
    """heron's ``LLM.generate`` and transformers' ``generate`` (each dtype and batch size) in one process,
    interleaved: ``--offline-rounds`` rounds, each with its own prompts (no prefix-cache hits) run by
    heron and then by each transformers setting, so a host whose speed drifts slows both alike; each
    setting's best round counts. Then heron one request at a time."""
    from heron import LLM

    kernel = {} if args.heron_linear_kernel == "auto" else {"linear_kernel": args.heron_linear_kernel}
    llm = LLM(dtype=args.heron_dtype, max_num_seqs=args.max_num_seqs, **kernel)
    res["model"]["parameters"] = llm.engine.num_parameters
    heron_runs: list[dict[str, Any]] = []
    hf_runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    models: dict[str, Any] = {}
    if "transformers" not in args.skip:
        section(res, "transformers (load)")
        try:
            models = {dtype: load_transformers(wl.gguf, dtype) for dtype in args.dtypes.split(",")}
        except Exception as err:  # e.g. no accelerate (transformers needs it to read GGUF)
            res["notes"].append(f"transformers: failed: {err}".splitlines()[0])
            print(f"transformers failed: {err}", file=sys.stderr)
    section(res, "offline (heron and transformers, interleaved)")
    for r, prompts in enumerate(wl.rounds):
        if "heron-offline" not in args.skip:
            thr = run_throughput(llm, prompts, args.output_len, warmup=wl.warmup if r == 0 else (), use_tqdm=False)
            heron_runs.append({"output_tok_s": thr.output_tok_s, "seconds": thr.seconds,
                               "output_tokens": thr.output_tokens})
            print(f"    round {r + 1}: heron {thr.output_tok_s:.1f} tok/s", flush=True)
        ids = [p.token_ids for p in prompts]
        for dtype, model in models.items():
            for bs in (int(b) for b in args.hf_batch_sizes.split(",")):
                run = time_transformers(model, ids, args.output_len, dtype, bs)
                hf_runs.setdefault((dtype, bs), []).append(run)
                print(f"    round {r + 1}: transformers {dtype} batch {bs}: {run['tok_s']:.1f} tok/s", flush=True)
    if heron_runs:
        best = max(heron_runs, key=lambda x: x["output_tok_s"])
        res["heron_offline"] = {"dtype": str(llm.engine.dtype).removeprefix("torch."),
                                "linear_kernel": llm.engine.linear_kernel, "max_num_seqs": args.max_num_seqs,
                                **best, "rounds": [x["output_tok_s"] for x in heron_runs]}
    if hf_runs:
        res["transformers"] = [{**max(runs, key=lambda x: x["tok_s"]), "rounds": [x["tok_s"] for x in runs]}
                               for runs in hf_runs.values()]
    res["notes"].append(f"offline: heron and transformers in one process, {len(wl.rounds)} interleaved rounds of "
                        f"{args.num_prompts} new prompts each; each setting's best round counts (all rounds in "
                        f"compare.json).")
    if "heron-offline" not in args.skip:
        lat = run_latency(llm, wl.singles, args.single_output_len)
        res["single_stream"]["heron offline"] = {"decode_tok_s": lat.decode_tok_s, "ttft_ms": lat.ttft_s * 1000}
    llm.shutdown()
    del llm
    gc.collect()
    save(res, args.out)
    if models:
        try:
            best = max((hf_single_stream(models[d], wl.singles[-1].token_ids, args.single_output_len, d)
                        for d in models), key=lambda x: x["decode_tok_s"])
            res["single_stream"][f"transformers ({best['dtype']}, batch 1)"] = best
        except Exception as err:  # noqa: BLE001 - keep the other numbers
            res["notes"].append(f"transformers single stream: failed: {err}".splitlines()[0])
    models.clear()
    gc.collect()
    save(res, args.out)


def run_serving(name: str, start, restart: bool, wl: Workload, args: argparse.Namespace, extra: dict,
                res: dict, *, long_prompt: bool = False) -> None:
    """``start(concurrency)`` returns a running Server: one for all levels, or one per level if
    ``restart``. Each level records the server tree's memory; then the single-stream requests and,
    with ``long_prompt``, the long-prompt TTFT run on one server (a fresh ``start(1)`` if ``restart``)."""
    section(res, f"{name} serving")
    by_c: dict[str, Any] = {}
    server = None
    try:
        for c in args.levels:
            if server is None or restart:
                if server is not None:
                    server.stop()
                server = start(c)
            by_c[str(c)] = r = serve_level(server.base_url, wl.by_level[c], args.output_len, c, extra)
            r["memory_mib"] = server.memory()
            if r["short"] or r["errors"]:
                why = f" (first error: {r['error_samples'][0]})" if r["error_samples"] else ""
                res["notes"].append(f"{name} at concurrency {c}: {r['errors']} of {r['num_requests']} requests "
                                    f"failed and {r['short']} ended before the tokens asked{why}.")
        if restart:
            server.stop()
            server = start(1)
        key = f"{name} serve" if name.startswith("heron") else name
        if name in ("heron", "llama-server"):  # the interleaved part gives the targets' figures (run_single_stream)
            key += " (after the serving levels)" if name == "heron" else " (restarted, -np 1)"
        res["single_stream"][key] = single_stream(server.base_url, wl.singles, args.single_output_len, extra)
        if long_prompt and "long-prompt" not in args.skip:
            res.setdefault("long_prompt", {})[name] = long_prompt_ttft(
                server.base_url, wl.long, {**extra, "logit_bias": wl.eos_bias})  # a text token, never EOS
    except Exception as err:  # one failing baseline must not lose the others' numbers
        res["notes"].append(f"{name}: failed: {err}".splitlines()[0])
        print(f"{name} failed: {err}", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
    res["serving"][name] = by_c
    save(res, args.out)


def run_servers(args: argparse.Namespace, wl: Workload, res: dict[str, Any]) -> None:
    """heron serve (and heron int4), llama-server and llama-cpp-python at each concurrency level."""
    if "heron-serve" not in args.skip:
        port = free_port()
        cmd = heron_cmd(args, port, args.max_num_seqs)
        run_serving("heron", lambda c: servers.start("heron", cmd, port, args.out), False, wl, args, {}, res,
                    long_prompt=True)
        if args.heron_int4:
            run_serving("heron int4", lambda c: servers.start("heron-int4", cmd + ["--linear-kernel", "int4"],
                                                              port, args.out), False, wl, args, {}, res)
    binary = servers.find_llama_server(args.llama_server)
    if "llama-server" in args.skip:
        pass
    elif binary is None:
        print(servers.LLAMA_SERVER_HELP, file=sys.stderr)
        res["notes"].append("llama-server: not found, not measured.")
    else:
        per_slot = args.input_len + max(args.output_len, args.single_output_len) + 64
        llama_args = shlex.split(args.llama_server_args)

        def start_llama(c: int) -> servers.Server:
            port = free_port()
            ctx = c * per_slot if c > 1 else max(per_slot, args.long_prompt_len + 64)  # 1: long prompts too
            return servers.start("llama-server", llama_cmd(binary, wl.gguf, c, ctx, port, llama_args), port, args.out)

        run_serving("llama-server", start_llama, True, wl, args, {}, res, long_prompt=True)
        res["notes"].append(f"llama-server ran with -t {physical_cores()} -np C -c C x {per_slot} "
                            f"{args.llama_server_args + ' ' if args.llama_server_args else ''}(restarted for "
                            f"each concurrency C; single stream and long prompts: -np 1 -c "
                            f"{max(per_slot, args.long_prompt_len + 64)}).")
    python = servers.find_llama_cpp_python(args.llama_cpp_python)
    if "llama-cpp-python" in args.skip:
        pass
    elif python is None:
        print(servers.LLAMA_CPP_PYTHON_HELP, file=sys.stderr)
        res["notes"].append("llama-cpp-python: not found, not measured.")
    else:
        port = free_port()
        ctx = args.input_len + max(args.output_len, args.single_output_len) + 64
        # interrupt_requests=False: by default a new request cuts the stream being served short
        cmd = [python, "-m", "llama_cpp.server", "--model", wl.gguf, "--n_threads", str(physical_cores()),
               "--n_ctx", str(ctx), "--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)]
        run_serving("llama-cpp-python", lambda c: servers.start("llama-cpp-python", cmd, port, args.out), False,
                    wl, args, {"logit_bias": wl.eos_bias}, res)
        res["notes"].append("llama-cpp-python's server ignores ignore_eos: EOS was suppressed with logit_bias "
                            "instead, so it too makes every requested token. It serves one request at a time "
                            "(run with --interrupt_requests False, else each new request ends the running one).")


def run_single_stream(args: argparse.Namespace, wl: Workload, res: dict[str, Any]) -> None:
    """``heron serve`` (its defaults, ``--max-num-seqs`` as served) and llama-server (``-np 1``) up at the
    same time, one request at a time, alternating between them: each single-stream prompt goes to both,
    back to back, so a host whose speed drifts from minute to minute slows both alike. Decode tok/s from
    the median time per output token over the requests (``--single-rounds`` passes over the prompts)."""
    binary = servers.find_llama_server(args.llama_server)
    if binary is None or {"heron-serve", "llama-server"} & args.skip:
        return
    section(res, "single stream")
    port_h, port_l = free_port(), free_port()
    ctx = max(args.input_len + args.single_output_len + 64, args.long_prompt_len + 64)
    with servers_up(res, "single stream") as started:
        started.append(servers.start("heron-single", heron_cmd(args, port_h, args.max_num_seqs), port_h, args.out))
        started.append(servers.start("llama-server-single", llama_cmd(binary, wl.gguf, 1, ctx, port_l,
                                                                      shlex.split(args.llama_server_args)),
                                     port_l, args.out))
        urls = {"heron serve": started[0].base_url, "llama-server": started[1].base_url}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
        for url in urls.values():  # one untimed request each
            asyncio.run(run_serve(wl.singles[:1], ServeConfig(base_url=url, output_len=8, concurrency=1),
                                  use_tqdm=False))
        for _ in range(args.single_rounds):
            for prompt in wl.singles[1:]:
                for name, url in urls.items():
                    cfg = ServeConfig(base_url=url, output_len=args.single_output_len, concurrency=1)
                    runs[name].append(asdict(asyncio.run(run_serve([prompt], cfg, use_tqdm=False))))
        for name, rs in runs.items():
            tpot = statistics.median(r["tpot_ms"]["p50"] for r in rs)
            res["single_stream"][name] = {
                "decode_tok_s": 1000 / tpot, "ttft_ms": statistics.median(r["ttft_ms"]["p50"] for r in rs),
                "output_tokens": sum(r["output_tokens"] for r in rs), "requests": sum(r["completed"] for r in rs),
                "interleaved": True}
            print(f"    {name}: {1000 / tpot:.1f} tok/s over {len(rs)} requests (interleaved)", flush=True)
        res["notes"].append(f"single stream: heron serve (--max-num-seqs {args.max_num_seqs}) and llama-server "
                            f"(-np 1 -c {ctx}) running side by side, each prompt sent to one then the other, "
                            f"{args.single_rounds} passes over {len(wl.singles) - 1} prompts; the rows marked "
                            f"'after the serving levels' / 'restarted' are the serving parts' own single-stream "
                            f"runs, minutes apart.")
    save(res, args.out)


def run_memory(args: argparse.Namespace, wl: Workload, res: dict[str, Any]) -> None:
    """heron serve and llama-server with the same slots and context length, one load of that many
    streams each: ``memory.py``'s :func:`measure_memory` (idle, after, sampled peak, VmHWM sum)."""
    from memory import measure_memory

    section(res, "memory")
    slots, ctx = args.memory_slots, args.memory_ctx
    try:
        m = measure_memory(wl.gguf, slots=slots, ctx=ctx, streams=slots, output_len=args.memory_output_len,
                           input_len=args.input_len, heron_args=heron_flags(args), llama_server=args.llama_server,
                           llama_args=shlex.split(args.llama_server_args),
                           log_dir=args.out / "memory")
    except Exception as err:
        res["notes"].append(f"memory: failed: {err}".splitlines()[0])
        print(f"memory: failed: {err}", file=sys.stderr)
        return
    keys = {"idle_mib": "idle", "after_mib": "rss", "peak_mib": "sampled_peak", "hwm_mib": "hwm",
            "output_tok_s": "output_tok_s", "errors": "errors"}
    engines = {name: {new: m[name][old] for old, new in keys.items()} for name in ("heron", "llama-server") if m[name]}
    for name, e in engines.items():
        print(f"    {name}: idle {e['idle']:.0f}, after {e['rss']:.0f}, sampled peak {e['sampled_peak']:.0f}, "
              f"VmHWM sum {e['hwm']:.0f} MiB", flush=True)
    res["memory"] = {"slots": slots, "ctx": ctx, "input_len": args.input_len, "output_len": args.memory_output_len,
                     "requests": slots, "engines": engines, "heron_args": m["config"]["heron_args"]}
    save(res, args.out)


def run_speculative(args: argparse.Namespace, wl: Workload, res: dict[str, Any]) -> None:
    """``heron serve`` without and with ``--speculative-config`` up at the same time, on spec_decode.py's
    copy workload: greedy requests one at a time, each prompt sent to one server then the other (the
    order swapped every pass), ``--spec-rounds`` passes, so a host whose speed drifts slows both alike."""
    from spec_decode import CODE, TASKS, chat_prompt

    section(res, "speculative")
    warm = chat_prompt(wl.tok, CODE.replace("radius", "r").replace("circle", "disk"), "describe", "show")
    tasks = [chat_prompt(wl.tok, CODE, old, new) for old, new in TASKS]
    flags = {"without": [], "ngram": ["--speculative-config", args.speculative_config]}
    out: dict[str, Any] = {"speculative_config": json.loads(args.speculative_config), "prompts": len(tasks),
                           "rounds": args.spec_rounds, "max_tokens": args.spec_max_tokens, "interleaved": True}
    with servers_up(res, "speculative") as started:
        urls = {}
        for name, extra in flags.items():
            port = free_port()
            started.append(servers.start(f"heron-spec-{name}", heron_cmd(args, port, args.max_num_seqs) + extra,
                                         port, args.out))
            urls[name] = started[-1].base_url
        outs: dict[str, list[list[int]]] = {name: [] for name in urls}
        seconds = dict.fromkeys(urls, 0.0)
        with httpx.Client(timeout=600) as client:
            served = {name: client.get(url + "/models").json()["data"][0]["id"] for name, url in urls.items()}
            for name, url in urls.items():  # one untimed request each
                copy_complete(client, url, served[name], warm, args.spec_max_tokens)
            before = spec_counters(client, urls["ngram"])
            for rnd in range(args.spec_rounds):
                for ids in tasks:
                    for name in (list(urls) if rnd % 2 == 0 else list(reversed(urls))):
                        ids_out, s = copy_complete(client, urls[name], served[name], ids, args.spec_max_tokens)
                        outs[name].append(ids_out)
                        seconds[name] += s
            drafts, accepted = (a - b for a, b in zip(spec_counters(client, urls["ngram"]), before, strict=True))
        runs: dict[str, Any] = {}
        for name in urls:
            tokens = sum(map(len, outs[name]))
            counted = name == "ngram"
            runs[name] = {"tokens": tokens, "seconds": seconds[name], "tok_s": tokens / seconds[name],
                          "drafts": drafts if counted else 0.0, "accepted": accepted if counted else 0.0,
                          "mean_acceptance_length": 1 + accepted / drafts if counted and drafts else None}
            print(f"    {name}: {tokens} tokens in {seconds[name]:.1f} s: {runs[name]['tok_s']:.1f} tok/s, "
                  f"{runs[name]['drafts']:.0f} drafts (interleaved)", flush=True)
        base, spec = outs["without"], outs["ngram"]
        out["speedup"] = runs["ngram"]["tok_s"] / runs["without"]["tok_s"]
        out["identical"] = base == spec
        out["first_difference"] = [next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b),
                                        min(len(x), len(y))) for x, y in zip(base, spec, strict=True)]
        out["lengths"] = [len(x) for x in base]
        out["runs"] = runs
    res["speculative"] = {"runs": {}, **out}
    save(res, args.out)


# -- command line, results ---------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--num-prompts", type=int, default=64, help="offline prompts (default 64)")
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--single-output-len", type=int, default=256)
    ap.add_argument("--concurrency", default="1,4,16,64", help="serving levels")
    ap.add_argument("--requests-per-level", type=int, default=4,
                    help="requests per level = this x concurrency, clamped to [--min-requests, --max-requests]")
    ap.add_argument("--min-requests", type=int, default=8)
    ap.add_argument("--max-requests", type=int, default=64)
    ap.add_argument("--single-requests", type=int, default=3, help="single-stream requests per engine")
    ap.add_argument("--single-rounds", type=int, default=2,
                    help="passes over the single-stream prompts of the interleaved heron / llama-server part")
    ap.add_argument("--long-prompt-len", type=int, default=3000, help="tokens of each long prompt")
    ap.add_argument("--long-prompt-reps", type=int, default=3, help="long prompts timed per engine (after one)")
    ap.add_argument("--memory-slots", type=int, default=16, help="memory part: parallel slots and streams")
    ap.add_argument("--memory-ctx", type=int, default=4096, help="memory part: context length, all slots")
    ap.add_argument("--memory-output-len", type=int, default=64, help="memory part: tokens per stream")
    ap.add_argument("--speculative-config", default=NGRAM, help=f"speculative part's config (default {NGRAM})")
    ap.add_argument("--spec-max-tokens", type=int, default=256, help="speculative part: max_tokens per prompt")
    ap.add_argument("--spec-rounds", type=int, default=2,
                    help="speculative part: passes over the prompts, each sent to both servers")
    ap.add_argument("--offline-rounds", type=int, default=2,
                    help="offline part: interleaved rounds of heron and transformers, new prompts each")
    ap.add_argument("--dtypes", default="bfloat16,float32", help="transformers dtypes")
    ap.add_argument("--hf-batch-sizes", default="64", help="transformers batch sizes (64 beat 32 in every past run)")
    ap.add_argument("--heron-dtype", default="auto")
    ap.add_argument("--max-num-seqs", type=int, default=64, help="heron's, offline and served")
    ap.add_argument("--heron-linear-kernel", default="auto", help="heron's --linear-kernel, offline and served")
    ap.add_argument("--heron-int4", action="store_true",
                    help="also serve heron with --linear-kernel int4 (4-bit weights, as llama.cpp's Q4_1 file)")
    ap.add_argument("--llama-server", default=None, help="llama.cpp's llama-server binary (default: on PATH)")
    ap.add_argument("--llama-server-args", default="",
                    help="extra llama-server flags, e.g. --no-repack where its AMX weight path crashes")
    ap.add_argument("--llama-cpp-python", default=None, help="a Python that can import llama_cpp.server")
    ap.add_argument("--skip", default="", help="comma list of: " + ",".join(PARTS))
    ap.add_argument("--reuse", default=None, metavar="JSON",
                    help="a previous compare.json: the parts named in --skip are taken from it (for a machine "
                         "shared with other work, where parts must be re-run in quiet moments)")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--doc", default=None, help="also write this markdown page (and its plot beside it)")
    ap.add_argument("--render", default=None, metavar="JSON", help="measure nothing: rewrite the tables, plot "
                                                                   "and --doc from a saved compare.json")
    args = ap.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    if args.skip - set(PARTS):
        ap.error(f"unknown --skip names {sorted(args.skip - set(PARTS))}; known: {','.join(PARTS)}")
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.out = Path(args.out_dir)
    return args


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        return write_outputs(json.loads(Path(args.render).read_text()), args.out, args.doc)
    res: dict[str, Any] = {"serving": {}, "single_stream": {}, "notes": [],
                           "commands": [" ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])]}
    section(res, "machine")
    res["machine"] = machine_info()
    print(json.dumps(res["machine"]), flush=True)
    wl = build_workload(args, args.levels)
    res["model"] = {"name": "SmolLM2-135M-Instruct", "gguf": Path(wl.gguf).name}
    res["workload"] = {"num_prompts": args.num_prompts, "input_len": args.input_len, "output_len": args.output_len,
                       "single_output_len": args.single_output_len, "concurrency": args.levels,
                       "long_prompt_len": args.long_prompt_len, "long_prompt_reps": args.long_prompt_reps,
                       "max_num_seqs": args.max_num_seqs}
    res["heron_flags"] = heron_flags(args)
    run_offline(args, wl, res)
    run_servers(args, wl, res)
    run_single_stream(args, wl, res)
    if "memory" not in args.skip:
        run_memory(args, wl, res)
    if "speculative" not in args.skip:
        run_speculative(args, wl, res)
    section(res, None)
    if args.reuse:
        reuse(res, json.loads(Path(args.reuse).read_text()), args.skip)
    (args.out / "compare.json").write_text(json.dumps(res, indent=2, default=str))
    write_outputs(res, args.out, args.doc)


def write_outputs(res: dict[str, Any], out: Path, doc: str | None) -> None:
    md = report.markdown(res)
    (out / "compare.md").write_text(md)
    report.plot(res, str(out / "compare.png"))
    print("\n" + md)
    if doc:
        png = Path(doc).with_suffix(".png")
        report.plot(res, str(png))
        kept = report.kept_sections(Path(doc).read_text()) if Path(doc).exists() else ""
        Path(doc).write_text(page(res, md, png.name, kept))
        print(f"wrote {doc} and {png}")


_PARTS = {  # --skip name: (its section, its top-level result keys, its serving name, its single-stream prefix)
    "heron-offline": ("heron offline", ("heron_offline",), None, "heron offline"),
    "transformers": ("transformers", ("transformers",), None, "transformers"),
    "heron-serve": ("heron serving", ("heron_serve_memory_mib",), "heron", "heron serve"),
    "llama-server": ("llama-server serving", (), "llama-server", "llama-server"),
    "llama-cpp-python": ("llama-cpp-python serving", (), "llama-cpp-python", "llama-cpp-python"),
    "long-prompt": ("long prompt", ("long_prompt",), None, "long prompt"),
    "memory": ("memory", ("memory",), None, "memory"),
    "speculative": ("speculative", ("speculative",), None, "speculative"),
}


def reuse(res: dict[str, Any], old: dict[str, Any], skip: set[str]) -> None:
    """Copy the skipped parts' results (and their notes, CPU shares, commands) from ``old``."""
    for part in skip & _PARTS.keys():
        section_name, keys, serving, single = _PARTS[part]
        for key in keys:
            if key in old:
                res[key] = old[key]
        if serving and old["serving"].get(serving):
            res["serving"][serving] = old["serving"][serving]
        if serving and serving in old.get("long_prompt", {}):  # measured on that server
            res.setdefault("long_prompt", {})[serving] = old["long_prompt"][serving]
        for name, value in old.get("single_stream", {}).items():
            if name.startswith(single):
                res["single_stream"][name] = value
        for name in (section_name, section_name + " (reused)"):
            if name in old.get("other_cpu", {}):
                res.setdefault("other_cpu", {})[section_name + " (reused)"] = old["other_cpu"][name]
        res["notes"] += [n for n in old.get("notes", []) if n.startswith(serving or single)]
    res["commands"] = old.get("commands", []) + res["commands"]


def page(res: dict[str, Any], md: str, png: str, kept: str = "") -> str:
    """The docs page: machine, command, results and plot, then ``kept`` (hand-written sections)."""
    m = res["machine"]
    return f"""# Performance

Latest side-by-side run of `benchmarks/compare.py` (see its docstring for what each number means).
Everything ran on one machine, the load generator on the same cores as the server it drives. One
engine works at a time; the parts behind the single-stream, offline and speculative targets keep both
sides loaded and alternate their requests or rounds, so that the host's drift from minute to minute
slows both alike (the serving levels run one server after the other). Model: {res['model']['name']} ({res['model']['parameters'] / 1e6:.1f} M parameters),
the `{res['model']['gguf']}` file for every engine: llama.cpp runs it directly, heron loads it with its
default kernels, transformers dequantizes it.

## Machine

- CPU: {m['cpu']}, {m['physical_cores']} physical cores ({m['logical_cpus']} logical CPUs usable), ISA: {m['isa']}
- RAM: {m['ram_gib']} GiB; Python {m['python']}, torch {m['torch']}
- Measured matmul peak (torch, 2048x2048): bf16 {m['bf16_gflops']:.0f} GFLOP/s, fp32 {m['fp32_gflops']:.0f} GFLOP/s.
  "Compute limit" below = output tok/s x 2 x parameters / bf16 FLOP/s.

## Command

```
{chr(10).join(res['commands'])}
```

## Results

{md}
![throughput and time to first token against concurrency, and the targets]({png})

{kept}## Measuring one engine yourself

```
heron bench throughput --num-prompts 64 --input-len 64 --output-len 128     # offline LLM.generate
heron bench latency --input-len 64 --output-len 256                         # one request at a time
heron serve &                                                               # then drive it (or any
heron bench serve --base-url http://127.0.0.1:8000/v1 --concurrency 16 \\
    --num-prompts 64 --input-len 64 --output-len 128                        # OpenAI-compatible server)
```

Each takes `--json`. `pip install 'heron[bench]'` brings what `bench serve` and this script's plot need.
"""


if __name__ == "__main__":
    main()
