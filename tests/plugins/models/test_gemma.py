"""Gemma 2 and Gemma 3 plugins match transformers on tiny random checkpoints, on every backend.

The cases use a sliding window of 4 so it cuts into MIXED_PLAN's 13-token requests, Gemma 2's
attention and final logit soft caps, and Gemma 3's interleaved sliding/full layers with distinct
local and global rope bases (and a scaled global rope).
"""

from __future__ import annotations

import pytest
import torch

from heron.plugins import registry
from tests.helpers_model import (
    PagedRunner,
    check_on_every_backend,
    greedy_tokens,
    hf_greedy_tokens,
    tiny_checkpoint,
    tiny_config,
)

GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 24, "sliding_window": 4}
LOCAL_GLOBAL = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
    "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
}
SCALED_GLOBAL = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
    "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0},
}
GEMMA3_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]
CASES = {
    "gemma2-softcap": ("gemma2", {**GEMMA, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0}),
    "gemma2-untied-nocap": ("gemma2", {**GEMMA, "tie_word_embeddings": False, "attn_logit_softcapping": None,
                                       "final_logit_softcapping": None}),
    "gemma3": ("gemma3_text", {**GEMMA, "num_hidden_layers": 3, "layer_types": GEMMA3_TYPES,
                               "rope_parameters": LOCAL_GLOBAL, "tie_word_embeddings": True}),
    "gemma3-scaled-global": ("gemma3_text", {**GEMMA, "num_hidden_layers": 3, "layer_types": GEMMA3_TYPES,
                                             "rope_parameters": SCALED_GLOBAL}),
    "gemma3-softcap": ("gemma3_text", {**GEMMA, "layer_types": ["sliding_attention", "full_attention"],
                                       "rope_parameters": LOCAL_GLOBAL, "attn_logit_softcapping": 4.0,
                                       "final_logit_softcapping": 6.0}),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    kind, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    return path, tiny_checkpoint(tiny_config(kind, **overrides), path)


def test_logits_match_transformers_on_every_backend(case):
    path, hf_model = case
    diffs = check_on_every_backend(path, hf_model)
    assert "eager" in diffs  # the reference takes soft caps and sliding windows


def test_greedy_decoding_matches_transformers(case):
    path, hf_model = case
    prompt = [3, 141, 59, 26, 5]
    assert greedy_tokens(PagedRunner.load(path, "eager"), prompt, 32) == hf_greedy_tokens(hf_model, prompt, 32)


def test_layers_carry_window_soft_cap_and_scale(tmp_path):
    config = tiny_config("gemma3_text", **CASES["gemma3-softcap"][1])
    tiny_checkpoint(config, tmp_path)
    model = PagedRunner.load(tmp_path, "eager").model
    attns = [layer.self_attn.attn for layer in model.model.layers]
    assert [a.sliding_window for a in attns] == [4, None]
    # transformers' Gemma 3 ignores attn_logit_softcapping (the final logit cap is applied)
    assert all(a.logits_soft_cap is None and a.scale == pytest.approx(24**-0.5) for a in attns)
    assert model.final_logit_softcapping == 6.0
    rope = model.model.rotary_emb
    assert (rope["sliding_attention"].base, rope["full_attention"].base) == (100.0, 10000.0)
    config2 = tiny_config("gemma2", **CASES["gemma2-softcap"][1])
    tiny_checkpoint(config2, tmp_path / "g2")
    attns2 = [layer.self_attn.attn for layer in PagedRunner.load(tmp_path / "g2", "eager").model.model.layers]
    assert [(a.sliding_window, a.logits_soft_cap) for a in attns2] == [(4, 5.0), (None, 5.0)]


def test_fused_weights_must_all_be_present(tmp_path):
    from heron.interfaces import ModelContext
    from heron.loader import build_model, load_checkpoint

    tiny_checkpoint(tiny_config("gemma2", **GEMMA), tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    full = ckpt._weights
    ckpt._weights = lambda *a: ((n, t) for n, t in full(*a) if "layers.1.mlp.up_proj" not in n)
    ctx = ModelContext(torch.float32, torch.device("cpu"), registry("attention_backends").load("eager")())
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.gate_up_proj\.weight\[shard 1\]"):
        build_model(ckpt, ctx)


def test_bidirectional_gemma3_is_refused():
    from heron.interfaces import ModelContext
    from heron_plugins.models.gemma3 import Gemma3ForCausalLM

    config = tiny_config("gemma3_text", **GEMMA, use_bidirectional_attention=True)
    with pytest.raises(ValueError, match="bidirectional"):
        Gemma3ForCausalLM(config, ModelContext(torch.float32, torch.device("cpu"), None))
