"""Llama/Qwen2/Mistral plugins match transformers on tiny random checkpoints, on every backend.

Each case runs three requests through a paged cache over five steps (two prefills together;
then one request prefilling in chunks while two decode, in the same batch; then decodes) and
compares every new token's logits with transformers fed the same chunks through its own cache.
"""

from __future__ import annotations

import pytest
import torch

from heron.plugins import registry
from tests.helpers_model import (
    MIXED_PLAN,
    PagedRunner,
    greedy_tokens,
    hf_greedy_tokens,
    hf_reference_logits,
    run_plan,
    tiny_checkpoint,
    tiny_config,
)

BACKENDS = tuple(registry("attention_backends").names())  # every installed backend (none declines Llama)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8, "rope_theta": 10000.0}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0}
CASES = {
    "llama": ("llama", {}),
    "llama-tied-headdim": ("llama", {"tie_word_embeddings": True, "head_dim": 24}),
    "llama-bias": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "qwen2": ("qwen2", {"tie_word_embeddings": True}),
    "mistral-window": ("mistral", {"sliding_window": 5}),
    "rope-linear": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}}),
    "rope-dynamic": ("llama", {"max_position_embeddings": 8,
                               "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}),
    "rope-llama3": ("llama", {"rope_parameters": LLAMA3}),
    "rope-yarn": ("llama", {"max_position_embeddings": 64, "rope_parameters": YARN}),
}

@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    kind, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    return path, tiny_checkpoint(tiny_config(kind, **overrides), path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_match_transformers(case, backend):
    path, hf_model = case
    chunks, logits = run_plan(PagedRunner.load(path, backend), MIXED_PLAN)
    for rid, got in logits.items():
        want = hf_reference_logits(hf_model, chunks[rid])
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=lambda m, rid=rid: f"request {rid}: {m}")


def test_greedy_matches_transformers_generate(case):
    path, hf_model = case
    prompt = [5, 17, 99, 3, 250, 42, 7]
    assert greedy_tokens(PagedRunner.load(path, "eager"), prompt, 32) == hf_greedy_tokens(hf_model, prompt, 32)


def test_bfloat16_stays_close(case):
    path, hf_model = case
    chunks, logits = run_plan(PagedRunner.load(path, "torch_sdpa", dtype=torch.bfloat16))
    want = hf_reference_logits(hf_model, chunks["a"])
    assert (logits["a"] - want).abs().max() < 0.1


def test_fused_weights_must_all_be_present(tmp_path):
    from heron.interfaces import ModelContext
    from heron.loader import build_model, load_checkpoint
    from heron.plugins import registry

    tiny_checkpoint(tiny_config("llama"), tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    full = ckpt._weights
    ckpt._weights = lambda *a: ((n, t) for n, t in full(*a) if "layers.1.self_attn.k_proj" not in n)
    ctx = ModelContext(torch.float32, torch.device("cpu"), registry("attention_backends").load("eager")())
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.qkv_proj\.weight\[shard 1\]"):
        build_model(ckpt, ctx)
