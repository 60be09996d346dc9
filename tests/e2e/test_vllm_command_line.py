"""A ``vllm serve`` command line, unchanged, starts ``heron serve`` on the default model.

The server gets nineteen of vLLM's flags (GPU-only ones among them: memory utilisation, eager
mode, swap space, KV-cache dtype) and its key from ``VLLM_API_KEY``; the official ``openai`` SDK
then talks to it with that key, and other keys get 401. Flags for features heron lacks stop the
command with status 2 before any model loads.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.e2e.conftest import have_default_model
from tests.e2e.server_fixture import ServerProcess, running_server

pytestmark = pytest.mark.slow

KEY = "sk-vllm-e2e"
NAME = "my-model"
VLLM_FLAGS = ["--host", "127.0.0.1", "--served-model-name", NAME, "--gpu-memory-utilization", "0.9",
              "--max-model-len", "2048", "--dtype", "float", "--enforce-eager", "--max-num-seqs", "8",
              "--trust-remote-code", "--disable-log-requests", "--tensor-parallel-size", "1", "--swap-space", "4",
              "--enable-prefix-caching", "--seed", "0", "--uvicorn-log-level", "warning", "--kv-cache-dtype", "auto",
              "--block-size", "16", "--max-num-batched-tokens", "2048", "--disable-log-stats",
              "--kv-cache-memory-bytes", "64MiB"]
#: the flags above that have no effect in heron: one warning line each in the server's log
NO_EFFECT = ("--gpu-memory-utilization", "--enforce-eager", "--disable-log-requests", "--swap-space",
             "--kv-cache-dtype", "--block-size", "--disable-log-stats")


@pytest.fixture(scope="module")
def server(request) -> ServerProcess:
    have_default_model()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_API_KEY", KEY)  # read by the server process, which inherits this environment
        with running_server(request, *VLLM_FLAGS) as proc:
            yield proc


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0, timeout=120)


def test_the_openai_sdk_works_with_vllm_api_key(client):
    assert [m.id for m in client.models.list().data] == [NAME]
    chat = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Say hello."}],
                                          max_tokens=8, temperature=0)
    assert chat.model == NAME and chat.choices[0].message.content
    assert 0 < chat.usage.completion_tokens <= 8
    pieces = [c.choices[0].text for c in client.completions.create(model=NAME, prompt="The capital of France is",
                                                                    max_tokens=6, temperature=0, stream=True)
              if c.choices]
    assert "".join(pieces).strip()


def test_other_keys_are_refused(server):
    wrong = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.status_code == 401
    assert httpx.get(f"{server.base_url}/v1/models", timeout=30).status_code == 401


def test_each_no_effect_flag_is_one_warning_line(server):
    log = server.log_text()
    for flag in NO_EFFECT:
        lines = [line for line in log.splitlines() if f"{flag}" in line and "has no effect in heron" in line]
        assert len(lines) == 1, (flag, lines)
    assert "Traceback" not in log


def run_serve(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heron.cli", "serve", *flags], capture_output=True, text=True,
                          timeout=120)


def test_missing_features_and_typos_exit_before_loading():
    done = run_serve("--served-model-name", NAME, "-pp", "2", "--num-speculative-tokens", "3")
    assert done.returncode == 2
    assert "--pipeline-parallel-size 2" in done.stderr and "--num-speculative-tokens" in done.stderr
    assert "not available yet" in done.stderr
    done = run_serve("--gpu-memory-utilisation", "0.9")
    assert done.returncode == 2 and "did you mean --gpu-memory-utilization?" in done.stderr
