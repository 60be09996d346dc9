"""The transformers fallback matches transformers on tiny random checkpoints, through heron's paged attention.

Each architecture runs heron's mixed plan (prefills, chunked prefill mixed with decodes, decodes) on every
attention backend that accepts it and compares every new token's logits with transformers fed the same
chunks through its own cache; greedy decoding, the native Llama plugin and the engine (prefix cache hits and
preemption) are checked against too.
"""

from __future__ import annotations

import pytest
import torch

from heron.layers import attention_layers
from tests.helpers_model import (
    MIXED_PLAN,
    PagedRunner,
    check_on_every_backend,
    greedy_tokens,
    hf_greedy_tokens,
    run_plan,
    tiny_checkpoint,
    tiny_config,
)

# name -> (model_type, config overrides in the config class's own field names)
CASES = {
    "gpt_neox": ("gpt_neox", {"num_key_value_heads": None, "use_parallel_residual": True}),
    "stablelm": ("stablelm", {"qk_layernorm": True, "use_qkv_bias": True}),
    "phi": ("phi", {"num_key_value_heads": 4}),
    "gpt2": ("gpt2", {"n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 64}),
    "qwen3": ("qwen3", {}),
    "gemma2-softcap-window": ("gemma2", {"sliding_window": 5, "head_dim": 16, "final_logit_softcapping": 3.0}),
    "granite-logits-scaling": ("granite", {"logits_scaling": 4.0, "attention_multiplier": 0.3}),
    "cohere-logit-scale": ("cohere", {"logit_scale": 0.5}),
}
ATOL = 1e-4


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    kind, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    return request.param, path, tiny_checkpoint(tiny_config(kind, **overrides), path)


def test_logits_match_transformers_on_every_accepting_backend(case):
    name, path, hf_model = case
    print(f"\n{name}: max |logit diff| per backend {check_on_every_backend(path, hf_model, 'transformers', ATOL)}")


def test_greedy_matches_transformers_generate(case):
    name, path, hf_model = case
    prompt = [3, 17, 99, 4, 250, 8, 61]
    runner = PagedRunner.load(path, "eager", model_impl="transformers")
    assert greedy_tokens(runner, prompt, 32) == hf_greedy_tokens(hf_model, prompt, 32)


def test_layers_read_heads_window_and_soft_cap_off_transformers(tmp_path):
    tiny_checkpoint(tiny_config("gemma2", sliding_window=5, head_dim=16, query_pre_attn_scalar=32), tmp_path)
    layers = attention_layers(PagedRunner.load(tmp_path, "eager", model_impl="transformers").model)
    assert [(x.num_heads, x.num_kv_heads, x.head_size) for x in layers] == [(4, 2, 16)] * 2
    assert [x.sliding_window for x in layers] == [5, None]  # gemma2 alternates sliding and global layers
    assert {x.logits_soft_cap for x in layers} == {50.0}
    assert {x.scale for x in layers} == {32**-0.5}


def test_llama_fallback_matches_native_plugin(tmp_path):
    tiny_checkpoint(tiny_config("llama", attention_bias=True), tmp_path)
    _, native = run_plan(PagedRunner.load(tmp_path, "torch_sdpa", model_impl="heron"), MIXED_PLAN)
    _, fallback = run_plan(PagedRunner.load(tmp_path, "torch_sdpa", model_impl="transformers"), MIXED_PLAN)
    for rid, want in native.items():
        torch.testing.assert_close(fallback[rid], want, atol=ATOL, rtol=0)


def test_projections_stay_linear_and_tied_heads_share(tmp_path):
    tiny_checkpoint(tiny_config("llama", tie_word_embeddings=True), tmp_path)
    model = PagedRunner.load(tmp_path, "eager", model_impl="transformers").model
    hf = model.hf
    assert isinstance(hf.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_missing_tensor_is_named(tmp_path):
    from heron.interfaces import ModelContext
    from heron.loader import build_model, load_checkpoint

    tiny_checkpoint(tiny_config("gpt_neox", num_key_value_heads=None), tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    full = ckpt._weights
    ckpt._weights = lambda *a: ((n, t) for n, t in full(*a) if "layers.1.attention.dense.weight" not in n)
    ctx = ModelContext(torch.float32, torch.device("cpu"), None)
    with pytest.raises(ValueError, match=r"lacks tensors for: gpt_neox\.layers\.1\.attention\.dense\.weight"):
        build_model(ckpt, ctx, model_impl="transformers")


def test_attention_outside_the_interface_is_refused(tmp_path):
    from heron.interfaces import ModelContext
    from heron.loader import build_model, load_checkpoint

    tiny_checkpoint(tiny_config("falcon", new_decoder_architecture=True, alibi=False, num_kv_heads=2), tmp_path)
    ctx = ModelContext(torch.float32, torch.device("cpu"), None)
    with pytest.raises(ValueError, match="FalconForCausalLM computes attention itself"):
        build_model(load_checkpoint(str(tmp_path)), ctx, model_impl="transformers")


def _generate(path, prompts, **kw):
    from heron import LLM, SamplingParams

    llm = LLM(str(path), dtype="float32", attention_backend="torch_sdpa", **kw)
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    outs = []
    for prompt in prompts:  # one at a time first: later prompts find the shared prefix cached
        outs += llm.generate([prompt], params, use_tqdm=False)
    outs += llm.generate(prompts, params, use_tqdm=False)  # then together, in a pool too small for all
    return llm, outs


def test_engine_fallback_matches_heron_with_prefix_hits_and_preemption(tmp_path):
    from heron.testing.models import save_tiny_tokenizer

    tiny_checkpoint(tiny_config("llama", max_position_embeddings=256), tmp_path)
    save_tiny_tokenizer(tmp_path)
    prefix = "The quick brown fox jumps over the lazy dog; " * 2  # 90 tokens: 5 full blocks shared
    prompts = [prefix + tail for tail in ("alpha", "beta!", "gamma", "delta", "omega")]
    small, got = _generate(tmp_path, prompts, model_impl="transformers", num_kv_blocks=14, max_num_seqs=5)
    _, want = _generate(tmp_path, prompts, model_impl="heron", num_kv_blocks=200, max_num_seqs=5)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]
    assert all(o.num_cached_tokens >= 80 for o in got[1:5]), [o.num_cached_tokens for o in got]
    assert small.engine.stats()["num_preemptions"] > 0
