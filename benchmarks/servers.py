"""Start, wait for and stop the OpenAI-compatible servers that ``compare.py`` measures.

Each server runs as a child process on 127.0.0.1 with its output in a log file; "ready" means
``GET /health`` answers 200, or, for servers without it (llama-cpp-python), ``GET /v1/models``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass
class Server:
    name: str
    base_url: str  # .../v1
    proc: subprocess.Popen
    log_path: Path

    def rss_mib(self) -> tuple[float, float] | None:
        """(current, peak) resident memory in MiB of the server's whole process tree (heron's
        engine process and workers included), from /proc; the peak is the sum of each process's."""
        kib = [0, 0]
        for pid in process_tree(self.proc.pid):
            try:
                fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            except OSError:
                continue
            kib = [kib[0] + int(fields["VmRSS"].split()[0]), kib[1] + int(fields["VmHWM"].split()[0])]
        return (kib[0] / 1024, kib[1] / 1024) if kib[0] else None

    def stop(self) -> None:
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
            if health.status_code == 200:
                return server
            if health.status_code == 404 and httpx.get(root + "/v1/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{name} did not become ready within {timeout_s:.0f} s; see {log_path}")
