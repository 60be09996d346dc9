"""``heron serve`` with its engine in a separate process: what happens when either process dies,
and a small smoke set for ``--engine-in-process`` (the rest of the e2e suite runs the engine process).

The engine process is found through ``/proc``: the server's child started by multiprocessing's
``spawn`` (``spawn_main`` in its command line; the resource tracker is the other child).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, wait_until

CHAT = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8, "temperature": 0}
FLAGS = ["--kv-cache-memory-bytes", "32MiB", "--max-num-seqs", "4"]


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of every live child of ``pid`` (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _engine_pid(server: ServerProcess) -> int:
    engines = [p for p, cmd in _children(server.pid).items() if "spawn_main" in cmd]
    assert len(engines) == 1, f"expected one engine process under the server, found {_children(server.pid)}"
    return engines[0]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _start(tmp_path: Path, name: str) -> ServerProcess:
    have_default_model()
    server = ServerProcess(FLAGS, tmp_path / f"{name}.log", engine_in_process=False)
    server.wait_ready()
    return server


def test_killing_the_engine_process_fails_health_and_exits_the_server(tmp_path):
    server = _start(tmp_path, "kill-engine")
    try:
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT, timeout=60)
        assert r.status_code == 200, r.text
        os.kill(_engine_pid(server), signal.SIGKILL)
        health = wait_until(lambda: (r := httpx.get(f"{server.base_url}/health", timeout=5)).status_code == 503 and r,
                            10, "/health to answer 503")
        assert "engine" in health.json().get("reason", "") or "engine" in health.text
        code = server.proc.wait(timeout=30)
    finally:
        server.stop()
    log = server.log_text()
    assert code == 1, f"heron serve exited with {code}; log:\n{log[-4000:]}"
    assert "heron serve: the engine loop failed: EngineDeadError" in log and "signal 9" in log


def test_the_engine_process_does_not_outlive_a_killed_server(tmp_path):
    server = _start(tmp_path, "kill-server")
    try:
        engine = _engine_pid(server)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        wait_until(lambda: not _alive(engine), 15, f"the engine process {engine} to exit")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def in_process(request):
    have_default_model()
    with running_server(request, *FLAGS, engine_in_process=True) as server:
        yield server


def test_in_process_mode_has_no_engine_process(in_process):
    assert not [p for p, cmd in _children(in_process.pid).items() if "spawn_main" in cmd]


def test_in_process_chat_streaming_and_completions(in_process):
    base = in_process.base_url
    r = httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=60)
    assert r.status_code == 200, r.text
    whole = r.json()["choices"][0]["message"]["content"]
    assert whole and r.json()["usage"]["completion_tokens"] > 0

    pieces = []
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=60) as s:
        assert s.status_code == 200
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                pieces.append(delta.get("content") or "")
    assert "".join(pieces) == whole  # greedy: the stream spells the same answer

    r = httpx.post(f"{base}/v1/completions", json={"model": CHAT["model"], "prompt": "The capital of France is",
                                                   "max_tokens": 5, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] and r.json()["usage"]["completion_tokens"] == 5
