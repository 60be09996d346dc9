"""``heron serve -tp 2`` (gloo, fp32) on a tiny Llama and a tiny Qwen3: the same greedy tokens as
offline tp=1, on one machine and (Llama) as two "nodes" on 127.0.0.1 (node 1 ``--headless``), and
node 1 exits when node 0 stops."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai import OpenAI

from heron import LLM, SamplingParams
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.e2e.server_fixture import free_port, running_server

pytestmark = pytest.mark.slow

PROMPTS = [f"p{i}: " + "abcdefgh"[: i + 1] * 2 for i in range(8)]  # <= 20 tokens: 32 more fit in 64
TOKENS = 32
FLAGS = ("--dtype", "float32", "--num-kv-blocks", "64", "--max-num-seqs", "8")


def _checkpoint(tmp_path_factory: pytest.TempPathFactory, family: str) -> tuple[str, list[list[int]]]:
    """A tiny checkpoint of ``family`` and its offline tp=1 greedy tokens."""
    path = tmp_path_factory.mktemp("tp-e2e") / family
    tiny_checkpoint(tiny_config(family), path)
    save_tiny_tokenizer(path)
    params = SamplingParams(max_tokens=TOKENS, temperature=0.0, ignore_eos=True)
    llm = LLM(str(path), dtype="float32", num_kv_blocks=64)
    reference = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    llm.shutdown()
    return str(path), reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[list[int]]]:
    return _checkpoint(tmp_path_factory, "llama")


def served_tokens(base_url: str, model: str) -> list[list[int]]:
    """Greedy completions of every prompt through the openai SDK; their token ids."""
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=300)
    tokens = []
    for prompt in PROMPTS:
        out = client.completions.create(model=model, prompt=prompt, max_tokens=TOKENS, temperature=0.0,
                                        extra_body={"ignore_eos": True, "return_token_ids": True})
        tokens.append(list(out.choices[0].model_extra["token_ids"]))
    return tokens


def test_serve_tp2_matches_offline_tp1(request, tiny) -> None:
    path, reference = tiny
    with running_server(request, path, "-tp", "2", *FLAGS) as server:
        assert served_tokens(server.base_url, path) == reference
        assert "tensor parallel: 2 ranks over 1 node(s)" in server.log_text()


def test_serve_tp2_second_family(request, tmp_path_factory) -> None:
    path, reference = _checkpoint(tmp_path_factory, "qwen3")
    with running_server(request, path, "-tp", "2", *FLAGS) as server:
        assert served_tokens(server.base_url, path) == reference


def test_two_nodes_on_one_machine(request, tiny, tmp_path: Path) -> None:
    path, reference = tiny
    port = str(free_port())
    node_flags = ("--nnodes", "2", "-tp", "2", "--master-addr", "127.0.0.1", "--master-port", port, *FLAGS)
    log = open(tmp_path / "node1.log", "wb")  # noqa: SIM115 - closed below
    node1 = subprocess.Popen([sys.executable, "-m", "heron.cli", "serve", path, "--node-rank", "1", "--headless",
                              *node_flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        with running_server(request, path, "--node-rank", "0", *node_flags) as server:
            assert node1.poll() is None, (tmp_path / "node1.log").read_text()
            assert served_tokens(server.base_url, path) == reference
        start = time.monotonic()
        code = node1.wait(timeout=60)  # node 0 stopped: node 1's ranks are told to stop and it exits
        assert code == 0, (tmp_path / "node1.log").read_text()
        assert time.monotonic() - start < 60
    finally:
        if node1.poll() is None:
            node1.kill()
            node1.wait(10)
        log.close()


def test_serve_tp2_with_lora_matches_offline_tp1(request, tiny, tmp_path: Path) -> None:
    """``-tp 2 --enable-lora --lora-modules``: the adapter's completions are offline tp=1's with it, the
    base model's stay the base's."""
    from transformers import AutoModelForCausalLM

    from heron.lora import LoRARequest
    from tests.core.distributed.test_tp_lora import save_adapter

    path, reference = tiny
    folder = save_adapter(AutoModelForCausalLM.from_pretrained(path), tmp_path / "sql", 5)
    params = SamplingParams(max_tokens=TOKENS, temperature=0.0, ignore_eos=True)
    llm = LLM(path, dtype="float32", num_kv_blocks=64, enable_lora=True, max_lora_rank=8)
    outs = llm.generate(PROMPTS, params, lora_request=LoRARequest("sql", 1, folder), use_tqdm=False)
    with_adapter = [list(o.outputs[0].token_ids) for o in outs]
    llm.shutdown()
    assert with_adapter != reference
    with running_server(request, path, "-tp", "2", *FLAGS, "--enable-lora", "--max-lora-rank", "8",
                        "--lora-modules", f"sql={folder}") as server:
        assert served_tokens(server.base_url, "sql") == with_adapter
        assert served_tokens(server.base_url, path) == reference
