"""``heron serve -dp 2`` on the default model in fp32: two engine processes behind one front-end.

Eight concurrent distinct requests are served by both replicas (their per-replica counters in
``/metrics`` rise) with the same greedy text as a ``-dp 1`` server; requests sharing a long
prefix go to one replica (its prefix-cache hits rise); control calls (``/reset_prefix_cache``,
``/sleep``, ``/wake_up``) reach both replicas; killing one replica's process makes ``/health``
fail and the server exit non-zero. One module-level server per configuration: the ``-dp 1``
reference runs first and is stopped before the ``-dp 2`` server starts (memory).
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import PROMPTS, have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, wait_until

pytestmark = pytest.mark.slow

TOKENS = 24
FLAGS = ("--dtype", "float32", "--max-num-seqs", "8", "--num-kv-blocks", "256", "--metrics-prefix", "heron,vllm",
         "--server-dev-mode", "--enable-sleep-mode")
SHARED = ("You are a careful assistant. Answer briefly and exactly. The user is planning a long trip through "
          "the mountains of northern Italy in late spring, travelling by train and on foot, carrying a small "
          "backpack, and wants practical, concrete advice without any marketing language. ") * 2


def complete_all(base_url: str, prompts: list[str], tokens: int = TOKENS) -> list[str]:
    """Greedy completions of ``prompts``, sent at once."""
    def one(prompt: str) -> str:
        body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0.0, "ignore_eos": True}
        response = httpx.post(f"{base_url}/v1/completions", json=body, timeout=300)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, prompts))


def per_engine(base_url: str, name: str) -> dict[str, float]:
    """``name``'s samples in ``/metrics`` by their ``engine`` label."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {s.labels.get("engine", ""): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


@pytest.fixture(scope="module")
def dp1_texts(request) -> list[str]:
    have_default_model()
    with running_server(request, *FLAGS) as server:
        return complete_all(server.base_url, PROMPTS)


@pytest.fixture(scope="module")
def dp2(request, dp1_texts) -> ServerProcess:
    with running_server(request, *FLAGS, "--data-parallel-size", "2") as server:
        yield server


def test_both_replicas_serve_with_dp1s_greedy_output(dp2, dp1_texts):
    before = per_engine(dp2.base_url, "heron:replica_requests_total")
    assert before == {"0": 0.0, "1": 0.0}
    assert complete_all(dp2.base_url, PROMPTS) == dp1_texts
    routed = per_engine(dp2.base_url, "heron:replica_requests_total")
    assert routed["0"] > 0 and routed["1"] > 0 and sum(routed.values()) == len(PROMPTS)
    generated = wait_until(lambda: (g := per_engine(dp2.base_url, "heron:replica_generation_tokens_total"))
                           and sum(g.values()) >= len(PROMPTS) * TOKENS and g, 30, "the replicas' token counters")
    assert generated["0"] >= TOKENS and generated["1"] >= TOKENS
    # vLLM's names: one series per replica, engine="0" and engine="1"; heron's summed series has none
    queries = per_engine(dp2.base_url, "vllm:prefix_cache_queries_total")
    assert set(queries) == {"0", "1"} and all(v > 0 for v in queries.values())
    assert set(per_engine(dp2.base_url, "vllm:num_requests_running")) == {"0", "1"}
    assert set(per_engine(dp2.base_url, "heron:num_requests_running")) == {""}


def test_a_shared_prefix_stays_on_one_replica(dp2):
    routed = per_engine(dp2.base_url, "heron:replica_requests_total")
    hits = per_engine(dp2.base_url, "vllm:prefix_cache_hits_total")
    for question in ("Which pass should I cross first?", "What shoes do I need?", "Where can I refill water?"):
        complete_all(dp2.base_url, [SHARED + question], tokens=4)
    after = per_engine(dp2.base_url, "heron:replica_requests_total")
    grew = {engine: after[engine] - routed[engine] for engine in after}
    assert sorted(grew.values()) == [0, 3], grew
    home = max(grew, key=grew.get)
    wait_until(lambda: per_engine(dp2.base_url, "vllm:prefix_cache_hits_total")[home] - hits[home] >= 64, 30,
               "prefix-cache hits on the replica holding the shared prefix")


def test_control_calls_reach_both_replicas(dp2, dp1_texts):
    assert httpx.post(f"{dp2.base_url}/reset_prefix_cache", timeout=60).status_code == 200
    assert httpx.post(f"{dp2.base_url}/sleep", params={"level": "1"}, timeout=60).status_code == 200
    assert httpx.get(f"{dp2.base_url}/is_sleeping", timeout=30).json() == {"is_sleeping": True}
    assert httpx.post(f"{dp2.base_url}/wake_up", timeout=120).status_code == 200
    assert httpx.get(f"{dp2.base_url}/is_sleeping", timeout=30).json() == {"is_sleeping": False}
    assert complete_all(dp2.base_url, PROMPTS[:4]) == dp1_texts[:4]  # both replicas woke with their KV pools


def _engine_pids(server_pid: int) -> list[int]:
    """The server's child processes that run an engine (multiprocessing's spawned children)."""
    children = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    return [pid for pid in children
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            and "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]


def test_killing_one_replica_fails_health_and_exits_the_server(dp2):
    """Last in this module: it ends the ``-dp 2`` server."""
    pids = _engine_pids(dp2.pid)
    assert len(pids) == 2, pids
    os.kill(pids[-1], signal.SIGKILL)

    def unhealthy() -> bool:
        try:
            return httpx.get(f"{dp2.base_url}/health", timeout=5).status_code != 200
        except httpx.TransportError:
            return True

    wait_until(unhealthy, 30, "/health to fail after an engine replica died")
    wait_until(lambda: dp2.proc.poll() is not None, 60, "the server to exit")
    assert dp2.proc.returncode != 0
    assert "data-parallel replica 1 of 2 stopped" in dp2.log_text()
