"""The Phi-3 plugin matches transformers on tiny random checkpoints, on every backend.

Cases: default rope; longrope whose ``original_max_position_embeddings`` (8) MIXED_PLAN's requests
cross mid-plan (so short factors give way to long ones, per request, as in transformers); partial
rotary; a sliding window of 4.
"""

from __future__ import annotations

import pytest

from tests.helpers_model import (
    PagedRunner,
    check_on_every_backend,
    greedy_tokens,
    hf_greedy_tokens,
    tiny_checkpoint,
    tiny_config,
)

IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # Phi-3's defaults lie past the tiny vocab


def longrope(dims: int) -> dict:
    return {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": [1.0 + 0.25 * i for i in range(dims)],
        "long_factor": [3.0 + 2.0 * i for i in range(dims)],
    }


CASES = {
    "phi3": {},
    "phi3-longrope": {"original_max_position_embeddings": 8, "rope_parameters": longrope(8)},
    "phi3-longrope-partial": {"original_max_position_embeddings": 8, "partial_rotary_factor": 0.5,
                              "rope_parameters": {**longrope(4), "partial_rotary_factor": 0.5}},
    "phi3-window": {"sliding_window": 4, "tie_word_embeddings": True},
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return path, tiny_checkpoint(tiny_config("phi3", **IDS, **CASES[request.param]), path)


def test_logits_match_transformers_on_every_backend(case):
    path, hf_model = case
    assert "eager" in check_on_every_backend(path, hf_model)


def test_greedy_decoding_matches_transformers(case):
    # A longrope prompt starts past original_max_position_embeddings: when a sequence crosses it
    # while decoding, transformers' generate() re-encodes the whole cache with the long factors,
    # whereas heron (like transformers' forward with a cache, and vLLM) keeps the cached keys.
    path, hf_model = case
    prompt = [3, 141, 59, 26, 5, 77, 200, 9, 31, 64, 12, 250]
    assert greedy_tokens(PagedRunner.load(path, "eager"), prompt, 32) == hf_greedy_tokens(hf_model, prompt, 32)


def test_checkpoint_tensors_are_pre_fused(case):
    from safetensors import safe_open

    path, _ = case
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    model = PagedRunner.load(path, "eager").model
    rope = model.model.rotary_emb
    assert rope.rotary_dim == (8 if "partial" in str(path) else 16)
