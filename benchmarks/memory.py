"""Resident memory of ``heron serve`` next to llama.cpp's ``llama-server``, on the same GGUF file.

Both servers get the same parallel slots and context length (``llama-server -np SLOTS -c CTX``,
``heron serve --max-num-seqs SLOTS --num-kv-blocks CTX/16``), then the same load: ``streams``
concurrent completions of ``output_len`` tokens each (EOS ignored), driven by ``heron.bench``'s load
generator. A sampler thread sums ``VmRSS`` over each server's whole process tree (an engine process
and workers included) every ``interval_s``; the report gives, in MiB, resident memory when idle
(ready, before the load), after the load, the largest sampled sum (peak) and the sum of every
process's high-water mark (``VmHWM``, which catches peaks between samples), and heron's ratios to
llama-server's. ``--stages`` also prints heron's resident memory after each start-up stage (imports,
model load, KV pool) from one in-process run, the breakdown behind the totals.

    .venv/bin/python benchmarks/memory.py --linear-kernel gguf [--stages] [--json out.json]

Import :func:`measure_memory` (and :func:`serve_rss`, :func:`startup_stages`) from other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import servers

from heron.bench import ServeConfig, random_prompts, run_serve
from heron.testing.processes import process_tree

__all__ = ("measure_memory", "serve_rss", "startup_stages", "tree_rss_mib")


def tree_rss_mib(pid: int) -> tuple[float, float]:
    """(sum of VmRSS, sum of VmHWM) in MiB over ``pid`` and its live descendants."""
    rss = hwm = 0
    for p in process_tree(pid):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines())
        except OSError:
            continue
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        hwm += int(fields.get("VmHWM", "0 kB").split()[0])
    return rss / 1024, hwm / 1024


class _Sampler:
    """Background thread keeping the largest summed VmRSS of a process tree."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, tree_rss_mib(self.pid)[0])

    def close(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def serve_rss(server: servers.Server, prompts: list[Any], *, streams: int, output_len: int,
              interval_s: float = 0.05, settle_s: float = 2.0) -> dict[str, float]:
    """Idle / after / peak / HWM resident MiB of a ready ``server`` around one load of ``prompts``."""
    time.sleep(settle_s)  # let start-up finish (trims, lazy first-touch) before "idle"
    idle = tree_rss_mib(server.proc.pid)[0]
    sampler = _Sampler(server.proc.pid, interval_s)
    cfg = ServeConfig(base_url=server.base_url, output_len=output_len, concurrency=streams,
                      extra_body={"ignore_eos": True})
    result = asyncio.run(run_serve(prompts, cfg, use_tqdm=False))
    peak = sampler.close()
    time.sleep(settle_s)  # idle again: what stays resident after serving
    after, hwm = tree_rss_mib(server.proc.pid)
    return {"idle_mib": round(idle, 1), "after_mib": round(after, 1), "peak_mib": round(max(peak, after), 1),
            "hwm_mib": round(hwm, 1), "output_tokens": result.output_tokens, "errors": result.errors,
            "output_tok_s": round(result.output_tok_s, 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_memory(gguf: str | None = None, *, slots: int = 16, ctx: int = 4096, streams: int = 16,
                   output_len: int = 64, input_len: int = 64, heron_args: Sequence[str] = (),
                   llama_server: str | None = None, llama_args: Sequence[str] = (), threads: int | None = None, log_dir: str | Path | None = None,
                   interval_s: float = 0.05) -> dict[str, Any]:
    """Serve ``gguf`` with heron and llama-server alike and measure each one's process-tree RSS.

    Args:
        gguf: the model file (default: heron's bundled SmolLM2-135M-Instruct Q4_1).
        slots: parallel sequences (``--max-num-seqs`` / ``-np``).
        ctx: KV tokens in all (``-c``; heron gets ``ctx / 16`` blocks of 16 tokens).
        streams: concurrent requests of the load (one each).
        output_len, input_len: tokens per request (EOS ignored) and prompt tokens.
        heron_args: extra ``heron serve`` flags, e.g. ``("--linear-kernel", "gguf")``.
        llama_server: its binary (default: on PATH); not found: only heron is measured.
        llama_args: extra llama-server flags (e.g. ``("--no-repack",)``).
        threads: llama-server's ``-t`` (default: heron's physical core count).
        log_dir: where the servers' logs go (default: a temporary folder).
        interval_s: the RSS sampling period.
    Returns:
        ``{"heron": {...}, "llama-server": {...} | None, "ratio": {...} | None, "config": {...}}``, each
        server's dict with ``idle_mib``, ``after_mib``, ``peak_mib``, ``hwm_mib`` (see :func:`serve_rss`) and
        ``ratio`` heron / llama-server for each of them.
    """
    from heron.engine.config import physical_cores
    from heron.loader import default_model_path, load_checkpoint

    gguf = str(gguf or default_model_path())
    logs = Path(log_dir or tempfile.mkdtemp(prefix="heron-memory-"))
    tok = load_checkpoint(gguf).tokenizer
    prompts = random_prompts(streams, input_len, tok, seed=0)
    out: dict[str, Any] = {"config": {"gguf": Path(gguf).name, "slots": slots, "ctx": ctx, "streams": streams,
                                      "output_len": output_len, "input_len": input_len,
                                      "heron_args": list(heron_args)}}
    port = _free_port()
    cmd = [sys.executable, "-m", "heron.cli", "serve", gguf, "--host", "127.0.0.1", "--port", str(port),
           "--max-num-seqs", str(slots), "--num-kv-blocks", str(ctx // 16), *heron_args]
    out["heron"] = _measure_one(servers.start("heron", cmd, port, logs), prompts, streams, output_len, interval_s)
    binary = servers.find_llama_server(llama_server)
    out["llama-server"] = out["ratio"] = None
    if binary is not None:
        port = _free_port()
        cmd = [binary, "-m", gguf, "-t", str(threads or physical_cores()), "-np", str(slots), "-c", str(ctx),
               "--host", "127.0.0.1", "--port", str(port), "--no-webui", *llama_args]
        out["llama-server"] = _measure_one(servers.start("llama-server", cmd, port, logs), prompts, streams,
                                           output_len, interval_s)
        keys = ("idle_mib", "after_mib", "peak_mib", "hwm_mib")
        out["ratio"] = {k: round(out["heron"][k] / out["llama-server"][k], 2) for k in keys}
    return out


def _measure_one(server: servers.Server, prompts: list[Any], streams: int, output_len: int,
                 interval_s: float) -> dict[str, float]:
    try:
        return serve_rss(server, prompts, streams=streams, output_len=output_len, interval_s=interval_s)
    finally:
        server.stop()


_STAGES = """
import sys, time
def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    return int(f["VmRSS"].split()[0]) / 1024
def stage(name, t0):
    print(f"{name:<28} {rss():8.1f} MiB  {len(sys.modules):5d} modules  {time.perf_counter() - t0:6.2f} s", flush=True)
t0 = time.perf_counter(); stage("python", t0)
import torch; stage("torch", t0)
import tokenizers, transformers; stage("tokenizers+transformers", t0)
import litestar, uvicorn; stage("litestar+uvicorn", t0)
from heron.cli.serve_cmd import add_parser; stage("heron.cli.serve_cmd", t0)
from heron.server.app import build_app; stage("heron.server.app", t0)
import argparse
from heron.server.settings import settings_from_args
ap = argparse.ArgumentParser(); add_parser(ap.add_subparsers())
settings = settings_from_args(ap.parse_args(sys.argv[1:]))
app = build_app(settings, engine=None); stage("app built", t0)
from heron.server.engine_client import start_engine
engine, _ = start_engine(settings); stage("engine started (model+KV)", t0)
print("modules: xgrammar" if "xgrammar" in sys.modules else "modules: no xgrammar",
      "jinja2" if "jinja2" in sys.modules else "no jinja2", "transformers.models" if any(
      m.startswith("transformers.models.") for m in sys.modules) else "", flush=True)
engine.shutdown()
"""


def startup_stages(heron_args: Sequence[str] = (), gguf: str | None = None) -> str:
    """heron's resident MiB and module count after each start-up stage, from a fresh interpreter."""
    args = ["serve", *([gguf] if gguf else []), *heron_args]
    done = subprocess.run([sys.executable, "-c", _STAGES, *args], capture_output=True, text=True, timeout=600)
    return done.stdout + (done.stderr[-2000:] if done.returncode else "")


def _print(res: dict[str, Any]) -> None:
    print(f"{'MiB':<14}{'idle':>8}{'after':>8}{'peak':>8}{'HWM':>8}")
    for name in ("heron", "llama-server", "ratio"):
        row = res.get(name)
        if row:
            print(f"{name:<14}" + "".join(f"{row[k]:>8}" for k in ("idle_mib", "after_mib", "peak_mib", "hwm_mib")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--linear-kernel", default=None, help="heron's --linear-kernel (default: its auto)")
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--llama-server-args", default="", help="extra llama-server flags, e.g. --no-repack")
    ap.add_argument("--skip-llama-server", action="store_true")
    ap.add_argument("--stages", action="store_true", help="also print heron's start-up stages")
    ap.add_argument("--json", default=None, help="write the results here")
    args, extra = ap.parse_known_args()  # unknown flags go to heron serve
    heron_args = [*(["--linear-kernel", args.linear_kernel] if args.linear_kernel else []), *extra]
    if args.stages:
        sized = ["--max-num-seqs", str(args.slots), "--num-kv-blocks", str(args.ctx // 16)]
        print(startup_stages([*sized, *heron_args], args.gguf))
    binary = None if args.skip_llama_server else (args.llama_server or shutil.which("llama-server"))
    res = measure_memory(args.gguf, slots=args.slots, ctx=args.ctx, streams=args.streams, output_len=args.output_len,
                         input_len=args.input_len, heron_args=heron_args, llama_server=binary or "/nonexistent",
                         llama_args=shlex.split(args.llama_server_args))
    _print(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
