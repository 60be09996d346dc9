"""A real ``heron serve`` subprocess for end-to-end tests: free port, readiness wait, log capture.

``running_server(request, *flags)`` starts ``python -m heron.cli serve`` on the default model,
waits for ``/health`` to answer 200, and always kills the process at the end. Its output goes to
a log file; when a test that uses the server fails, the lines the server wrote during that test
are attached to the failure report as a "heron serve log" section.

The engine runs in its own process (``--no-engine-in-process``, passed explicitly whatever the
server's default); ``engine_in_process=True`` (or ``HERON_E2E_ENGINE_IN_PROCESS=1`` in the test
runner's environment, for the whole suite) runs it as a thread of the server instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from heron.testing.processes import process_tree

__all__ = ("ServerProcess", "free_port", "in_process_by_default", "process_tree", "running_server", "tree_rss",
           "wait_until")

START_TIMEOUT_S = 240.0
_MODE_FLAGS = ("--engine-in-process", "--no-engine-in-process")


def in_process_by_default() -> bool:
    """Whether the e2e servers run their engine in-process unless a test says otherwise."""
    return os.environ.get("HERON_E2E_ENGINE_IN_PROCESS", "") not in ("", "0", "false")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of ``pid`` and its descendants (summed ``VmRSS``)."""
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def _wants_fp32(flags: list[str]) -> bool:
    pairs = zip(flags, [*flags[1:], ""], strict=True)
    return any((a == "--dtype" and b in ("float32", "fp32")) or a in ("--dtype=float32", "--dtype=fp32") for a, b in pairs)


class ServerProcess:
    """One ``heron serve`` process and its log file."""

    def __init__(self, flags: list[str], log_path: Path, *, engine_in_process: bool | None = None) -> None:
        self.port = free_port()
        if not any(f in _MODE_FLAGS for f in flags):
            in_process = in_process_by_default() if engine_in_process is None else engine_in_process
            flags = [*flags, _MODE_FLAGS[0] if in_process else _MODE_FLAGS[1]]
        if _wants_fp32(flags) and not any(f.startswith("--linear-kernel") for f in flags):
            # fp32 servers are the suite's exactness references (token-equal to transformers, batched
            # equal to alone): the dequantized path, not the GGUF kernel's int8 decode dot products
            flags = [*flags, "--linear-kernel", "dense"]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # --log-requests: one access-log line per request, so failure reports show the traffic
        self.argv = [sys.executable, "-m", "heron.cli", "serve", "--port", str(self.port), "--log-requests", *flags]
        # no HERON_* settings leak in from the developer's shell: the flags say everything
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["TQDM_DISABLE"] = "1"  # the weight loader's progress bar would fill the log
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self, start: int = 0) -> str:
        if not self._log.closed:  # still readable after stop()
            self._log.flush()
        return self.log_path.read_bytes()[start:].decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"heron serve exited with code {self.proc.returncode} during start-up; "
                            f"log:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"heron serve did not become healthy within {timeout:.0f} s; log:\n{self.log_text()}")

    def stop(self) -> int | None:
        """Kill the process if it still runs (SIGTERM, then SIGKILL) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


class _LogOnFailure:
    """A pytest plugin object: attaches the server's log to the reports of failing tests."""

    def __init__(self, server: ServerProcess, name: str) -> None:
        self.server, self.name = server, name
        self._offset = 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        if call.when == "setup":
            self._offset = self.server.log_size() if self.server.log_path.exists() else 0
        outcome = yield
        report = outcome.get_result()
        if report.failed and self.name in getattr(item, "fixturenames", ()):
            whole = self.server.log_text()
            during = self.server.log_text(self._offset) if call.when != "setup" else ""
            before = whole[: len(whole) - len(during)] if during else whole
            text = f"{before[-8000:]}\n----- {item.name} started here -----\n{during[-16000:]}"
            report.sections.append((f"heron serve log ({self.name}, {self.server.log_path})", text))


@contextmanager
def running_server(request: pytest.FixtureRequest, *flags: str,
                   engine_in_process: bool | None = None) -> Iterator[ServerProcess]:
    """Start ``heron serve FLAGS`` for the fixture ``request.fixturename`` and kill it afterwards
    (``engine_in_process``: True for ``--engine-in-process``; None: the suite's default)."""
    name = request.fixturename
    log_dir = request.getfixturevalue("tmp_path_factory").mktemp("heron-serve")
    server = ServerProcess(list(flags), log_dir / f"{name}.log", engine_in_process=engine_in_process)
    reporter = _LogOnFailure(server, name)
    request.config.pluginmanager.register(reporter, f"heron-serve-log-{name}-{server.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)
