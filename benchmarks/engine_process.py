"""``heron serve`` with the engine in its own process vs in the HTTP server's process, in one run.

The bundled default model (SmolLM2-135M-Instruct), streaming ``/v1/chat/completions`` with short
random prompts and ``--output-len`` tokens each (EOS ignored), at each concurrency level, driven
by ``heron bench serve``'s load generator (:func:`heron.bench.run_serve`). Each mode gets a fresh
server; with ``--rounds 2`` (default) the modes run A B then B A and the better figure of each
level is kept, which evens out other work on a shared machine. Memory is the whole process tree
(the server and every descendant: engine process, multiprocessing's resource tracker): the sum
of RSS and of PSS (shared pages split between the processes that map them), peak over the run.

    .venv/bin/python benchmarks/engine_process.py --out benchmarks/results/engine_process.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import servers
from compare import free_port

from heron.bench import ServeConfig, random_prompts, run_serve
from heron.loader import load_checkpoint
from heron.testing.processes import process_tree

MODES = {"engine process": "--no-engine-in-process", "in-process": "--engine-in-process"}


def tree_memory_mib(pid: int) -> dict[str, float]:
    """Summed RSS and PSS (MiB) of ``pid``'s process tree."""
    total = {"rss": 0.0, "pss": 0.0}
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    total[key.lower()] += int(value.split()[0]) / 1024
        except OSError:
            continue
    return total


def run_mode(mode: str, args: argparse.Namespace, prompts: dict[int, list], log_dir: Path) -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, "-m", "heron.cli", "serve", "--port", str(port), MODES[mode],
           "--max-num-seqs", str(args.max_num_seqs), *shlex.split(args.serve_flags)]
    server = servers.start(mode.replace(" ", "-"), cmd, port, log_dir)
    out: dict[str, Any] = {"levels": {}, "memory_mib": {"rss": 0.0, "pss": 0.0}}
    try:
        for c, level_prompts in prompts.items():
            cfg = ServeConfig(base_url=server.base_url, endpoint="chat", output_len=args.output_len, concurrency=c,
                              extra_body={"ignore_eos": True})
            res = asdict(asyncio.run(run_serve(level_prompts[1:], cfg, warmup=level_prompts[:1], use_tqdm=False)))
            mem = tree_memory_mib(server.proc.pid)
            out["memory_mib"] = {k: max(v, mem[k]) for k, v in out["memory_mib"].items()}
            out["levels"][c] = {"tok_s": res["output_tok_s"], "ttft_p50_ms": res["ttft_ms"]["p50"],
                                "errors": res["errors"], "short": res["short"], "requests": res["num_requests"]}
            print(f"  {mode:>14} c={c:<3} {res['output_tok_s']:7.1f} tok/s  TTFT p50 {res['ttft_ms']['p50']:7.0f} ms"
                  f"  errors {res['errors']} short {res['short']}  tree RSS {mem['rss']:.0f} MiB", flush=True)
    finally:
        server.stop()
    return out


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per level the run with the highest tok/s; memory: the peak of all runs."""
    levels = {c: max((r["levels"][c] for r in runs), key=lambda x: x["tok_s"]) for c in runs[0]["levels"]}
    memory = {k: max(r["memory_mib"][k] for r in runs) for k in ("rss", "pss")}
    return {"levels": levels, "memory_mib": memory}


def table(result: dict[str, dict[str, Any]]) -> str:
    modes = list(result)
    levels = list(result[modes[0]]["levels"])
    head = "| concurrency | " + " | ".join(f"{m} tok/s | {m} TTFT p50 (ms)" for m in modes) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(modes))]
    for c in levels:
        cells = []
        for m in modes:
            r = result[m]["levels"][c]
            cells += [f"{r['tok_s']:.1f}", f"{r['ttft_p50_ms']:.0f}"]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    mem = " | ".join(f"{m}: RSS {result[m]['memory_mib']['rss']:.0f} MiB, PSS {result[m]['memory_mib']['pss']:.0f} MiB"
                     for m in modes)
    return "\n".join(rows) + f"\n\nWhole process tree, peak: {mem}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--requests-per-level", type=int, default=2, help="requests = this x concurrency (at least 8)")
    ap.add_argument("--input-len", type=int, default=24)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--serve-flags", default="", help="more `heron serve` flags, one string")
    ap.add_argument("--out", default="benchmarks/results/engine_process.json")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    tok = load_checkpoint(None).tokenizer
    prompts = {c: random_prompts(max(8, args.requests_per_level * c) + 1, args.input_len, tok, seed=100 + c)
               for c in levels}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list] = {m: [] for m in MODES}
    order = list(MODES)
    for r in range(args.rounds):
        for mode in order if r % 2 == 0 else order[::-1]:
            print(f"round {r + 1}: {mode}", flush=True)
            runs[mode].append(run_mode(mode, args, prompts, out.parent / "engine_process_logs"))
    result = {m: best(rs) for m, rs in runs.items()}
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    out.write_text(json.dumps({"command": command, "runs": runs, "best": result}, indent=1, default=str))
    print(table(result))


if __name__ == "__main__":
    main()
