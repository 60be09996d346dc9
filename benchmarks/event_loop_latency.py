"""Does a running stream keep its pace while very large requests arrive?

Starts ``heron serve`` on the default model, streams one long completion (EOS ignored) and
records the gap between its chunks: first alone, then while another client keeps sending
requests with bodies just under the 8 MiB default cap (a chat message, and a completions prompt
of that size; both are tokenized and then refused as longer than the context). Whatever the
server does with a big request on its event loop shows up as a stall in the stream.

    .venv/bin/python benchmarks/event_loop_latency.py
    # the same measurement on another checkout (e.g. the code before a change):
    .venv/bin/python benchmarks/event_loop_latency.py --pythonpath /tmp/before-src --label before

Prints inter-token latency p50 / p99 / max (ms) for the quiet and the loaded phase.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

BODY_BYTES = 8 * 1024 * 1024 - 4096  # just under the default --max-request-body-bytes


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(pythonpath: str | None, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen([sys.executable, "-m", "heron.cli", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("heron serve did not become healthy")


def _stream_gaps(base: str, tokens: int) -> list[float]:
    body = {"prompt": "Once upon a time", "max_tokens": tokens, "ignore_eos": True, "temperature": 0,
            "stream": True}
    gaps, last = [], None
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now
    return gaps


def _big_bodies() -> list[bytes]:
    words = ("lorem ipsum dolor sit amet " * (BODY_BYTES // 27))[: BODY_BYTES - 200]
    chat = {"messages": [{"role": "user", "content": words}], "max_tokens": 1}
    comp = {"prompt": words, "max_tokens": 1}
    return [json.dumps(chat).encode(), json.dumps(comp).encode()]


def _hammer(base: str, stop: threading.Event, counts: dict[str, int]) -> None:
    bodies = _big_bodies()
    paths = ["/v1/chat/completions", "/v1/completions"]
    with httpx.Client(timeout=600) as client:
        i = 0
        while not stop.is_set():
            r = client.post(base + paths[i % 2], content=bodies[i % 2], headers={"content-type": "application/json"})
            counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
            i += 1


def _summary(gaps: list[float]) -> dict[str, float]:
    ms = sorted(g * 1000 for g in gaps)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1), "max_ms": round(ms[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pythonpath", default=None, help="PYTHONPATH for the server (another checkout)")
    ap.add_argument("--label", default="current")
    ap.add_argument("--tokens", type=int, default=300)
    args = ap.parse_args()
    port = _port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(args.pythonpath, port)
    try:
        _stream_gaps(base, 16)  # warm-up
        quiet = _stream_gaps(base, args.tokens)
        stop, counts = threading.Event(), {}
        hammer = threading.Thread(target=_hammer, args=(base, stop, counts), daemon=True)
        hammer.start()
        time.sleep(1.0)  # the first big body is on its way
        loaded = _stream_gaps(base, args.tokens)
        stop.set()
        hammer.join(timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps({"label": args.label, "quiet": _summary(quiet), "with_8MiB_requests": _summary(loaded),
                      "big_request_statuses": counts}, indent=2))


if __name__ == "__main__":
    main()
