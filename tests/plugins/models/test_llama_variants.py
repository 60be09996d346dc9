"""Qwen3, OLMo 2, Granite, SmolLM3 and GPT-2 plugins match transformers on tiny random checkpoints.

Each case builds one checkpoint per module, runs :data:`MIXED_PLAN` (prefills, a chunked prefill
mixed with decodes, decodes) through every attention backend that accepts the model, and compares
every new token's logits with transformers fed the same chunks; then greedy decoding must pick
the same 32 tokens as transformers' ``generate``.
"""

from __future__ import annotations

import pytest
import torch

from heron.interfaces import ModelContext
from heron.plugins import registry
from tests.helpers_model import (
    PagedRunner,
    check_on_every_backend,
    greedy_tokens,
    hf_greedy_tokens,
    tiny_checkpoint,
    tiny_config,
)

_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # inside the 256-token vocabulary
CASES = {
    "qwen3": ("qwen3", {"head_dim": 16}),
    "qwen3-tied": ("qwen3", {"tie_word_embeddings": True}),  # head_dim 128 (config default) > hidden / heads
    "qwen3-window": ("qwen3", {"head_dim": 16, "use_sliding_window": True, "sliding_window": 5,
                               "max_window_layers": 1}),
    "olmo2": ("olmo2", {}),
    "olmo2-bias": ("olmo2", {"attention_bias": True, "num_key_value_heads": 4}),
    "granite": ("granite", {"embedding_multiplier": 6.0, "residual_multiplier": 0.3,
                            "attention_multiplier": 0.4, "logits_scaling": 2.5}),
    "smollm3": ("smollm3", {"no_rope_layer_interval": 2}),  # layer 0 rope, layer 1 NoPE
    "smollm3-window": ("smollm3", {"no_rope_layers": [0, 1], "use_sliding_window": True, "sliding_window": 5}),
    "gpt2": ("gpt2", {"tie_word_embeddings": True, "n_inner": 96}),
    "gpt2-untied": ("gpt2", {"scale_attn_by_inverse_layer_idx": True, "activation_function": "gelu"}),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    kind, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    return path, tiny_checkpoint(tiny_config(kind, **_IDS, **overrides), path)


def test_logits_match_transformers_on_every_backend(case):
    path, hf_model = case
    print(f"\n{path.name}: max |logit diff| per backend {check_on_every_backend(path, hf_model)}")


def test_greedy_matches_transformers(case):
    path, hf_model = case
    prompt = [5, 17, 99, 3, 250, 42]
    assert greedy_tokens(PagedRunner.load(path, "eager"), prompt, 32) == hf_greedy_tokens(hf_model, prompt, 32)


@pytest.mark.parametrize("flag", ["reorder_and_upcast_attn", "add_cross_attention"])
def test_gpt2_refuses_options_it_does_not_implement(flag):
    config = tiny_config("gpt2", **{flag: True})
    cls = registry("models").load("GPT2LMHeadModel")
    ctx = ModelContext(torch.float32, torch.device("cpu"), None)
    with pytest.raises(ValueError, match=flag):
        cls(config, ctx)
