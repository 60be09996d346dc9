"""Mixtral, Qwen2-MoE and Qwen3-MoE plugins match transformers on tiny random checkpoints.

Each case builds one checkpoint per module (4 experts, 2 per token): :data:`MIXED_PLAN` runs
through every attention backend that accepts the model and every new token's logits are compared
with transformers'; greedy decoding must pick transformers' 32 tokens; the same weights saved in
transformers 5.x's stacked-expert layout load too; and through the real engine, four prompts
generated in one batch give the tokens each gives alone (tokens routed to different experts in
one batch must not disturb each other).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from heron import LLM, SamplingParams
from heron.interfaces import ModelContext
from heron.loader import build_model, load_checkpoint
from heron.testing.models import (
    PagedRunner,
    check_against_transformers,
    check_on_every_backend,
    greedy_tokens,
    hf_greedy_tokens,
    save_tiny_tokenizer,
    tiny_checkpoint,
    tiny_config,
)

_IDS = {"bos_token_id": 1, "eos_token_id": 0, "pad_token_id": 0}  # inside the 256-token vocabulary
CASES = {
    "mixtral": ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    # layer 1 is dense (mlp_only_layers); layer 0 has a shared expert; top-k weights not renormalised
    "qwen2_moe": ("qwen2_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]}),
    "qwen3_moe": ("qwen3_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "norm_topk_prob": True, "head_dim": 16}),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    kind, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    hf_model = tiny_checkpoint(tiny_config(kind, **_IDS, **overrides), path)
    save_tiny_tokenizer(path)
    return path, hf_model


def test_logits_match_transformers_on_every_backend(case):
    path, hf_model = case
    diffs = check_on_every_backend(path, hf_model)
    assert "eager" in diffs, "the reference backend refused the model"
    print(f"\n{path.name}: max |logit diff| per backend {diffs}")


def test_greedy_matches_transformers(case):
    path, hf_model = case
    prompt = [5, 17, 99, 3, 250, 42]
    assert greedy_tokens(PagedRunner.load(path, "eager"), prompt, 32) == hf_greedy_tokens(hf_model, prompt, 32)


def test_stacked_expert_checkpoint_loads(case, tmp_path):
    """transformers 5.x in-memory names (``mlp.experts.gate_up_proj`` [E, 2I, H]) load like the Hub's."""
    path, hf_model = case
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    shutil.copy(path / "config.json", tmp_path / "config.json")
    assert check_against_transformers(tmp_path, hf_model, "eager") < 1e-4


def test_a_missing_expert_tensor_is_named(case):
    path, _ = case
    ckpt = load_checkpoint(str(path))
    full = ckpt._weights
    ckpt._weights = lambda *a: ((n, t) for n, t in full(*a) if not n.endswith("layers.0.mlp.experts.2.down_proj.weight")
                             and not n.endswith("layers.0.block_sparse_moe.experts.2.w2.weight"))
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.experts: expert 2 down"):
        build_model(ckpt, ModelContext(torch.float32, torch.device("cpu"), None))


def test_batched_generation_equals_one_at_a_time(case):
    path, _ = case
    llm = LLM(str(path), dtype="float32", num_kv_blocks=128)
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    prompts = ["Mixture", "of experts routes each token", "to two of four", "experts, batched or not."]
    together = [out.outputs[0].token_ids for out in llm.generate(prompts, params, use_tqdm=False)]
    alone = [llm.generate(p, params, use_tqdm=False)[0].outputs[0].token_ids for p in prompts]
    assert all(len(ids) == 16 for ids in together)
    assert together == alone
