"""vLLM's operational routes on a real ``heron serve`` (the default model).

One server runs with vLLM's dev switches (``--server-dev-mode --enable-sleep-mode
--torch-profiler-dir``) and a 32 MiB KV pool (small pools are zeroed at allocation, so all of it
is resident): sleeping at level 1 must give back about the pool, level 2 also the weights, both
measured as the server process's resident memory (``VmRSS``); waking must bring the same greedy
tokens for the same prompt. A second server without those switches must answer 404 on them,
while SageMaker's ``/invocations`` and ``POST /ping`` work on both.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server, tree_rss

pytestmark = pytest.mark.slow

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
GATED = [("POST", "/reset_prefix_cache"), ("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
         ("GET", "/server_info"), ("GET", "/tokenizer_info"), ("POST", "/start_profile"), ("POST", "/stop_profile")]
MiB = 2**20


@pytest.fixture(scope="module")
def profiles(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@pytest.fixture(scope="module")
def dev_server(request, profiles) -> ServerProcess:
    have_default_model()
    with running_server(request, "--server-dev-mode", "--enable-sleep-mode", "--torch-profiler-dir", str(profiles),
                        "--kv-cache-memory-bytes", "32MiB", "--max-num-seqs", "4") as proc:
        yield proc


@pytest.fixture(scope="module")
def plain_server(request) -> ServerProcess:
    have_default_model()
    with running_server(request, "--kv-cache-memory-bytes", "32MiB", "--max-num-seqs", "4") as proc:
        yield proc


def rss(pid: int) -> int:
    """The resident memory in bytes of the server and its engine process (the whole process tree)."""
    return tree_rss(pid)


def greedy(http: httpx.Client, prompt: str = PROMPT, n: int = 16) -> dict:
    response = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": n, "temperature": 0,
                                                  "ignore_eos": True, "logprobs": 1})
    assert response.status_code == 200, response.text
    return response.json()


def tokens(body: dict) -> tuple[str, list[str]]:
    choice = body["choices"][0]
    return choice["text"], choice["logprobs"]["tokens"]


def test_sleep_gives_memory_back_and_wake_restores_the_same_tokens(dev_server):
    with httpx.Client(base_url=dev_server.base_url, timeout=300) as http:
        before = tokens(greedy(http))
        report: list[str] = []
        for level in (1, 2):
            awake = rss(dev_server.pid)
            assert http.post(f"/sleep?level={level}").status_code == 200
            asleep = rss(dev_server.pid)
            assert http.get("/is_sleeping").json() == {"is_sleeping": True}
            refused = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_sleeping"
            freed = http.get("/server_info?config_format=json").json()["engine"]["sleep"]
            expected = freed["kv_bytes"] + (freed["weight_bytes"] if level == 2 else 0)
            try:
                # the bundled GGUF's packed Q4_1/Q8_0 blocks (the LM head's Q8_0 table is the embedding's too)
                assert freed["kv_bytes"] > 30 * MiB and (level == 1 or freed["weight_bytes"] > 85 * MiB), freed
            finally:  # the module's other tests need an awake server
                assert http.post("/wake_up").status_code == 200
            woken = rss(dev_server.pid)
            assert http.get("/is_sleeping").json() == {"is_sleeping": False}
            report.append(f"level {level}: RSS {awake / MiB:.0f} MiB awake -> {asleep / MiB:.0f} MiB asleep "
                          f"-> {woken / MiB:.0f} MiB woken; released {expected / MiB:.0f} MiB")
            print(report[-1])
            assert awake - asleep >= 0.8 * expected, report[-1]
            assert woken - asleep >= 0.5 * expected, report[-1]  # it came back (malloc keeps some slack)
            assert tokens(greedy(http)) == before, f"level {level}: different tokens after waking"


def test_reset_prefix_cache_uncaches_a_repeated_prompt(dev_server):
    long_prompt = PROMPT + " The keeper had lived alone on the rock for thirty years, and nothing surprised him."
    with httpx.Client(base_url=dev_server.base_url, timeout=300) as http:
        greedy(http, long_prompt, n=1)
        assert greedy(http, long_prompt, n=1)["usage"]["prompt_tokens_details"]["cached_tokens"] >= 16
        assert http.post("/reset_prefix_cache").status_code == 200
        assert greedy(http, long_prompt, n=1)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_profile_writes_a_trace(dev_server, profiles):
    with httpx.Client(base_url=dev_server.base_url, timeout=300) as http:
        assert http.post("/start_profile").status_code == 200
        greedy(http, n=2)
        assert http.post("/stop_profile").status_code == 200
    traces = list(profiles.glob("heron-engine.*.pt.trace.json.gz"))
    assert len(traces) == 1, traces
    events = json.loads(gzip.decompress(traces[0].read_bytes()))["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)


@pytest.mark.parametrize("which", ["dev_server", "plain_server"])
def test_invocations_routes_chat_and_completions_bodies(request, which):
    server = request.getfixturevalue(which)
    with httpx.Client(base_url=server.base_url, timeout=300) as http:
        chat = http.post("/invocations", json={"messages": CHAT, "max_tokens": 8, "temperature": 0})
        assert chat.status_code == 200 and chat.json()["object"] == "chat.completion", chat.text
        direct = http.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 8, "temperature": 0})
        assert chat.json()["choices"][0]["message"] == direct.json()["choices"][0]["message"]
        text = http.post("/invocations", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0})
        assert text.status_code == 200 and text.json()["object"] == "text_completion", text.text
        assert http.post("/ping").json() == {"status": "ok"}


def test_gated_routes_are_404_without_their_flags(plain_server):
    with httpx.Client(base_url=plain_server.base_url, timeout=60) as http:
        for method, path in GATED:
            assert http.request(method, path).status_code == 404, (method, path)
        assert http.get("/openapi.json").json()["openapi"].startswith("3.1")
