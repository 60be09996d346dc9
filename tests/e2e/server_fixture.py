"""A real ``heron serve`` subprocess for end-to-end tests: free port, readiness wait, log capture.

``running_server(request, *flags)`` starts ``python -m heron.cli serve`` on the default model,
waits for ``/health`` to answer 200, and always kills the process at the end. Its output goes to
a log file; when a test that uses the server fails, the lines the server wrote during that test
are attached to the failure report as a "heron serve log" section.
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

__all__ = ("ServerProcess", "free_port", "running_server", "wait_until")

START_TIMEOUT_S = 240.0


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


class ServerProcess:
    """One ``heron serve`` process and its log file."""

    def __init__(self, flags: list[str], log_path: Path) -> None:
        self.port = free_port()
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
def running_server(request: pytest.FixtureRequest, *flags: str) -> Iterator[ServerProcess]:
    """Start ``heron serve FLAGS`` for the fixture ``request.fixturename`` and kill it afterwards."""
    name = request.fixturename
    log_dir = request.getfixturevalue("tmp_path_factory").mktemp("heron-serve")
    server = ServerProcess(list(flags), log_dir / f"{name}.log")
    reporter = _LogOnFailure(server, name)
    request.config.pluginmanager.register(reporter, f"heron-serve-log-{name}-{server.port}")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)
