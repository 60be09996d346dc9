"""Start, wait for and stop the OpenAI-compatible servers that ``compare.py`` measures.

Each server runs as a child process on 127.0.0.1 with its output in a log file; "ready" means
``GET /health`` answers 200, or, for servers without it (llama-cpp-python), ``GET /v1/models``.
From then on a thread samples the resident memory of the server's whole process tree (the sum of
each process's ``VmRSS``, heron's engine process and workers included) a few times a second, so
:meth:`Server.memory` can report its idle, current and peak size.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from heron.testing.processes import process_tree

LLAMA_SERVER_HELP = """\
llama.cpp's llama-server was not found (pass --llama-server PATH, or put it on PATH). To build it
from the llama.cpp that llama-cpp-python's sdist vendors (about 10-40 minutes on 2 cores):
    pip download llama-cpp-python --no-deps --no-binary :all: -d /tmp/lcp
    cd /tmp/lcp && tar xzf llama_cpp_python-*.tar.gz && cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=ON
    cmake --build build --target llama-server -j2        # -> build/bin/llama-server"""

LLAMA_CPP_PYTHON_HELP = """\
llama-cpp-python's server was not found (pass --llama-cpp-python PYTHON: an interpreter that can
`import llama_cpp.server`). Install it in a separate virtual environment (compiles llama.cpp):
    python -m venv /tmp/lcp-venv && /tmp/lcp-venv/bin/pip install 'llama-cpp-python[server]'
or reuse the llama.cpp built above: copy the sdist's llama_cpp/ folder into that venv's
site-packages, pip install its [server] dependencies, and set LLAMA_CPP_LIB_PATH to build/bin."""


def tree_memory_kib(pid: int) -> tuple[int, int]:
    """(sum of VmRSS, sum of VmHWM) in KiB over ``pid`` and its live descendants, from /proc."""
    rss = hwm = 0
    for p in process_tree(pid):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines())
        except (OSError, ValueError):  # the process ended while we read it
            continue
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        hwm += int(fields.get("VmHWM", "0 kB").split()[0])
    return rss, hwm


@dataclass
class Server:
    name: str
    base_url: str  # .../v1
    proc: subprocess.Popen
    log_path: Path
    idle_kib: int = 0  # the tree's RSS once it answered /health, before any request
    peak_kib: int = 0  # the largest RSS sum sampled since then
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def sample_memory(self, interval_s: float = 0.2) -> None:
        """Start the background sampler of the process tree's RSS sum (done by :func:`start`)."""
        self.idle_kib = self.peak_kib = tree_memory_kib(self.proc.pid)[0]

        def loop() -> None:
            while not self._stop.wait(interval_s) and self.proc.poll() is None:
                self.peak_kib = max(self.peak_kib, tree_memory_kib(self.proc.pid)[0])

        threading.Thread(target=loop, name=f"rss-{self.name}", daemon=True).start()

    def memory(self) -> dict[str, float]:
        """The tree's memory in MiB: ``idle`` (at start), ``rss`` (now), ``sampled_peak`` (largest
        RSS sum seen by the sampler, a lower bound of the true peak) and ``hwm`` (sum of each
        process's own peak, ``VmHWM``, which includes loading; an upper bound of the true peak)."""
        rss, hwm = tree_memory_kib(self.proc.pid)
        self.peak_kib = max(self.peak_kib, rss)
        return {"idle": self.idle_kib / 1024, "rss": rss / 1024, "sampled_peak": self.peak_kib / 1024,
                "hwm": hwm / 1024}

    def rss_mib(self) -> tuple[float, float] | None:
        """(current, peak) resident memory in MiB of the server's whole process tree (heron's
        engine process and workers included), from /proc; the peak is the sum of each process's."""
        rss, hwm = tree_memory_kib(self.proc.pid)
        return (rss / 1024, hwm / 1024) if rss else None

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def find_llama_server(given: str | None) -> str | None:
    path = given or shutil.which("llama-server")
    return path if path and os.access(path, os.X_OK) else None


def find_llama_cpp_python(given: str | None) -> str | None:
    """An interpreter that has ``llama_cpp.server``: the given one (checked), else this one."""
    if given:
        ok = subprocess.run([given, "-c", "import llama_cpp.server.app"], capture_output=True).returncode == 0
        return given if ok else None
    return sys.executable if importlib.util.find_spec("llama_cpp") else None


def start(name: str, cmd: list[str], port: int, log_dir: Path, *, env: dict[str, str] | None = None,
          timeout_s: float = 300.0) -> Server:
    """Run ``cmd`` and wait until it serves on ``port``; raise with the log's tail if it dies."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(name, f"http://127.0.0.1:{port}/v1", proc, log_path)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
        try:
            health = httpx.get(root + "/health", timeout=2)
            if health.status_code == 200 or (
                    health.status_code == 404 and httpx.get(root + "/v1/models", timeout=2).status_code == 200):
                server.sample_memory()
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{name} did not become ready within {timeout_s:.0f} s; see {log_path}")
