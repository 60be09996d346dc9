"""heron vs HF transformers vs llama.cpp (llama-server, llama-cpp-python's server), side by side.

One run, one model (the bundled SmolLM2-135M-Instruct: heron and transformers dequantize its
Q4_1 GGUF, llama.cpp runs it as is), one workload of random distinct prompts (the same token
ids / text everywhere), EOS ignored so every request makes exactly the asked tokens:

- offline throughput: heron's ``LLM.generate`` vs transformers' ``generate`` (best of its dtypes
  and batch sizes), each also as a fraction of the machine's bf16 matmul compute limit;
- serving: ``heron serve``, ``llama-server -np C`` (restarted per level) and llama-cpp-python's
  server, driven by ``heron bench serve``'s load generator at each concurrency level;
- single stream: decode tok/s and time to first token of one request at a time.

Baselines that are not installed are skipped with instructions to build them. Writes
compare.json, compare.md and compare.png to --out-dir, and with --doc a full docs page.

    .venv/bin/python benchmarks/compare.py --llama-server /path/to/llama-server \\
        --llama-cpp-python /path/to/venv/bin/python --doc docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

import report
import servers
import torch
from throughput import run_transformers

from heron.bench import ServeConfig, random_prompts, run_latency, run_serve, run_throughput
from heron.engine.config import physical_cores
from heron.loader import default_model_path, load_checkpoint


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


def serve_level(base_url: str, prompts: list, output_len: int, concurrency: int, extra: dict) -> dict[str, Any]:
    from dataclasses import asdict

    cfg = ServeConfig(base_url=base_url, output_len=output_len, concurrency=concurrency, extra_body=extra)
    res = asdict(asyncio.run(run_serve(prompts[1:], cfg, warmup=prompts[:1])))
    print(f"    concurrency {concurrency:>3}: {res['output_tok_s']:7.1f} tok/s, TTFT p50 "
          f"{res['ttft_ms']['p50'] / 1000:6.2f} s, {res['output_tokens']} tokens, {res['errors']} errors, {res['short']} short", flush=True)
    return res


def single_stream(base_url: str, prompts: list, output_len: int, extra: dict) -> dict[str, Any]:
    res = serve_level(base_url, prompts, output_len, 1, extra)
    return {"decode_tok_s": 1000 / res["tpot_ms"]["p50"], "ttft_ms": res["ttft_ms"]["p50"],
            "output_tokens": res["output_tokens"], "requests": res["completed"]}


def hf_single_stream(path: str, ids: list[int], output_len: int, dtype: str) -> dict[str, Any]:
    """transformers, batch 1: decode tok/s from the time of ``output_len`` tokens minus that of 1."""
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype)).eval()
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


def run_serving(name: str, start, restart: bool, levels: list[int], prompts_by_level: dict,
                single_prompts: list, args: argparse.Namespace, extra: dict, res: dict) -> None:
    """``start(concurrency)`` returns a running Server: one for all levels, or one per level if ``restart``."""
    section(res, f"{name} serving")
    by_c: dict[str, Any] = {}
    server = None
    try:
        for c in levels:
            if server is None or restart:
                if server is not None:
                    server.stop()
                server = start(c)
            by_c[str(c)] = r = serve_level(server.base_url, prompts_by_level[c], args.output_len, c, extra)
            if r["short"] or r["errors"]:
                why = f" (first error: {r['error_samples'][0]})" if r["error_samples"] else ""
                res["notes"].append(f"{name} at concurrency {c}: {r['errors']} of {r['num_requests']} requests "
                                    f"failed and {r['short']} ended before the tokens asked{why}.")
        if restart:
            server.stop()
            server = start(1)
        res["single_stream"][f"{name} serve" if name.startswith("heron") else name] = single_stream(
            server.base_url, single_prompts, args.single_output_len, extra)
        if name == "heron":
            res["heron_serve_memory_mib"] = server.rss_mib()
        elif name == "heron int4":
            res["heron_int4_serve_memory_mib"] = server.rss_mib()
    except Exception as err:  # one failing baseline must not lose the others' numbers
        res["notes"].append(f"{name}: failed: {err}".splitlines()[0])
        print(f"{name} failed: {err}", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
    res["serving"][name] = by_c
    save(res, args.out)


def main() -> None:
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
    ap.add_argument("--dtypes", default="bfloat16,float32", help="transformers dtypes")
    ap.add_argument("--hf-batch-sizes", default="32,64")
    ap.add_argument("--heron-dtype", default="auto")
    ap.add_argument("--max-num-seqs", type=int, default=64, help="heron's, offline and served")
    ap.add_argument("--heron-linear-kernel", default="auto", help="heron's --linear-kernel, offline and served")
    ap.add_argument("--heron-int4", action="store_true",
                    help="also serve heron with --linear-kernel int4 (4-bit weights, as llama.cpp's Q4_1 file)")
    ap.add_argument("--llama-server", default=None, help="llama.cpp's llama-server binary (default: on PATH)")
    ap.add_argument("--llama-cpp-python", default=None, help="a Python that can import llama_cpp.server")
    ap.add_argument("--skip", default="", help="comma list of: heron-offline,transformers,heron-serve,"
                                                "llama-server,llama-cpp-python")
    ap.add_argument("--reuse", default=None, metavar="JSON",
                    help="a previous compare.json: the parts named in --skip are taken from it (for a machine "
                         "shared with other work, where parts must be re-run in quiet moments)")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--doc", default=None, help="also write this markdown page (and its plot beside it)")
    ap.add_argument("--render", default=None, metavar="JSON", help="measure nothing: rewrite the tables, plot "
                                                                   "and --doc from a saved compare.json")
    args = ap.parse_args()
    if args.render:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        return write_outputs(json.loads(Path(args.render).read_text()), Path(args.out_dir), args.doc)
    skip = set(filter(None, args.skip.split(",")))
    levels = [int(c) for c in args.concurrency.split(",")]
    out = args.out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = physical_cores()

    res: dict[str, Any] = {"serving": {}, "single_stream": {}, "notes": [],
                           "commands": [" ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])]}
    section(res, "machine")
    res["machine"] = machine_info()
    print(json.dumps(res["machine"]), flush=True)
    gguf = default_model_path()
    ckpt = load_checkpoint(None)
    tok = ckpt.tokenizer
    res["model"] = {"name": "SmolLM2-135M-Instruct", "gguf": Path(gguf).name}
    res["workload"] = {"num_prompts": args.num_prompts, "input_len": args.input_len, "output_len": args.output_len,
                       "single_output_len": args.single_output_len, "concurrency": levels}
    warm_and_prompts = random_prompts(2 + args.num_prompts, args.input_len, tok, seed=0)  # no shared blocks
    warmup, prompts = warm_and_prompts[:2], warm_and_prompts[2:]
    n_for = {c: min(max(args.requests_per_level * c, args.min_requests), args.max_requests) for c in levels}
    by_level = {c: random_prompts(n_for[c] + 1, args.input_len, tok, seed=1000 + c) for c in levels}
    singles = random_prompts(args.single_requests + 1, args.input_len, tok, seed=7)
    eos_bias = {str(t): -100 for t in ckpt.eos_token_ids}

    # -- offline ---------------------------------------------------------------------------
    from heron import LLM

    llm = LLM(dtype=args.heron_dtype, max_num_seqs=args.max_num_seqs, linear_kernel=args.heron_linear_kernel)
    res["model"]["parameters"] = llm.engine.num_parameters
    if "heron-offline" not in skip:
        section(res, "heron offline")
        thr = run_throughput(llm, prompts, args.output_len, warmup=warmup)
        res["heron_offline"] = {"dtype": str(llm.engine.dtype).removeprefix("torch."),
                                "linear_kernel": llm.engine.linear_kernel,
                                "max_num_seqs": args.max_num_seqs, "output_tok_s": thr.output_tok_s,
                                "seconds": thr.seconds, "output_tokens": thr.output_tokens}
        print(f"    {thr.output_tok_s:.1f} tok/s", flush=True)
        lat = run_latency(llm, singles, args.single_output_len)
        res["single_stream"]["heron offline"] = {"decode_tok_s": lat.decode_tok_s, "ttft_ms": lat.ttft_s * 1000}
    del llm
    gc.collect()
    save(res, out)
    if "transformers" not in skip:
        section(res, "transformers")
        ids = [p.token_ids for p in prompts]
        res["transformers"] = []
        try:
            for dtype in args.dtypes.split(","):
                for bs in (int(b) for b in args.hf_batch_sizes.split(",")):
                    r = run_transformers(gguf, ids, args.output_len, dtype, bs)
                    print(f"    {dtype} batch {bs}: {r['tok_s']:.1f} tok/s", flush=True)
                    res["transformers"].append(r)
                    gc.collect()
            best = max((hf_single_stream(gguf, singles[-1].token_ids, args.single_output_len, d)
                        for d in args.dtypes.split(",")), key=lambda r: r["decode_tok_s"])
            res["single_stream"][f"transformers ({best['dtype']}, batch 1)"] = best
        except Exception as err:  # e.g. no accelerate (transformers needs it to read GGUF)
            res["notes"].append(f"transformers: failed: {err}".splitlines()[0])
            print(f"transformers failed: {err}", file=sys.stderr)
        save(res, out)

    # -- serving ---------------------------------------------------------------------------
    if "heron-serve" not in skip:
        port = free_port()
        cmd = [sys.executable, "-m", "heron.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--dtype", args.heron_dtype, "--max-num-seqs", str(args.max_num_seqs)]
        run_serving("heron", lambda c: servers.start("heron", cmd + ["--linear-kernel", args.heron_linear_kernel],
                                                     port, out), False, levels, by_level, singles, args, {}, res)
        if args.heron_int4:
            run_serving("heron int4", lambda c: servers.start("heron-int4", cmd + ["--linear-kernel", "int4"],
                                                              port, out), False, levels, by_level, singles, args, {}, res)
    binary = servers.find_llama_server(args.llama_server)
    if "llama-server" in skip:
        pass
    elif binary is None:
        print(servers.LLAMA_SERVER_HELP, file=sys.stderr)
        res["notes"].append("llama-server: not found, not measured.")
    else:
        def start_llama(c: int) -> servers.Server:
            port = free_port()
            ctx = c * (args.input_len + max(args.output_len, args.single_output_len) + 64)
            cmd = [binary, "-m", gguf, "-t", str(threads), "-np", str(c), "-c", str(ctx), "--host", "127.0.0.1",
                   "--port", str(port), "--no-webui"]
            return servers.start("llama-server", cmd, port, out)

        run_serving("llama-server", start_llama, True, levels, by_level, singles, args, {}, res)
        res["notes"].append(f"llama-server ran with -t {threads} -np C (restarted for each concurrency C).")
    python = servers.find_llama_cpp_python(args.llama_cpp_python)
    if "llama-cpp-python" in skip:
        pass
    elif python is None:
        print(servers.LLAMA_CPP_PYTHON_HELP, file=sys.stderr)
        res["notes"].append("llama-cpp-python: not found, not measured.")
    else:
        port = free_port()
        ctx = args.input_len + max(args.output_len, args.single_output_len) + 64
        # interrupt_requests=False: by default a new request cuts the stream being served short
        cmd = [python, "-m", "llama_cpp.server", "--model", gguf, "--n_threads", str(threads), "--n_ctx", str(ctx),
               "--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)]
        run_serving("llama-cpp-python", lambda c: servers.start("llama-cpp-python", cmd, port, out), False, levels,
                    by_level, singles, args, {"logit_bias": eos_bias}, res)
        res["notes"].append("llama-cpp-python's server ignores ignore_eos: EOS was suppressed with logit_bias "
                            "instead, so it too makes every requested token. It serves one request at a time "
                            "(run with --interrupt_requests False, else each new request ends the running one).")

    section(res, None)
    if args.reuse:
        reuse(res, json.loads(Path(args.reuse).read_text()), skip)
    (out / "compare.json").write_text(json.dumps(res, indent=2, default=str))
    write_outputs(res, out, args.doc)


def write_outputs(res: dict[str, Any], out: Path, doc: str | None) -> None:
    md = report.markdown(res)
    (out / "compare.md").write_text(md)
    report.plot(res, str(out / "compare.png"))
    print("\n" + md)
    if doc:
        png = Path(doc).with_suffix(".png")
        report.plot(res, str(png))
        Path(doc).write_text(page(res, md, png.name))
        print(f"wrote {doc} and {png}")


_PARTS = {"heron-offline": ("heron offline", "heron_offline", None, "heron offline"),
          "transformers": ("transformers", "transformers", None, "transformers"),
          "heron-serve": ("heron serving", None, "heron", "heron serve"),
          "llama-server": ("llama-server serving", None, "llama-server", "llama-server"),
          "llama-cpp-python": ("llama-cpp-python serving", None, "llama-cpp-python", "llama-cpp-python")}


def reuse(res: dict[str, Any], old: dict[str, Any], skip: set[str]) -> None:
    """Copy the skipped parts' results (and their notes, CPU shares, commands) from ``old``."""
    for part in skip & _PARTS.keys():
        section_name, key, serving, single = _PARTS[part]
        if key and key in old:
            res[key] = old[key]
        if serving and old["serving"].get(serving):
            res["serving"][serving] = old["serving"][serving]
        for name, value in old.get("single_stream", {}).items():
            if name.startswith(single):
                res["single_stream"][name] = value
        for name in (section_name, section_name + " (reused)"):
            if name in old.get("other_cpu", {}):
                res.setdefault("other_cpu", {})[section_name + " (reused)"] = old["other_cpu"][name]
        if part == "heron-serve" and old.get("heron_serve_memory_mib"):
            res["heron_serve_memory_mib"] = old["heron_serve_memory_mib"]
        res["notes"] += [n for n in old.get("notes", []) if n.startswith(serving or single)]
    res["commands"] = old.get("commands", []) + res["commands"]


def page(res: dict[str, Any], md: str, png: str) -> str:
    m = res["machine"]
    return f"""# Performance

Latest side-by-side run of `benchmarks/compare.py` (see its docstring for what each number means).
Everything ran on one machine, one engine at a time, the load generator on the same cores as the
server it drives. Model: {res['model']['name']} ({res['model']['parameters'] / 1e6:.1f} M parameters;
llama.cpp runs the `{res['model']['gguf']}` file directly, heron and transformers dequantize it).

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
![throughput and time to first token against concurrency]({png})

## Measuring one engine yourself

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
