"""LoRA on other model plugins: their module names (or lora_target overrides) map PEFT adapters exactly.

Phi-3 checkpoints fuse qkv_proj/gate_up_proj natively (heron's names equal HF's), Gemma 2 fuses
q/k/v and gate/up as Llama does with its own loader, GPT-2's fused ``c_attn`` is an HF ``Conv1D``
(PEFT sets ``fan_in_fan_out``; the LoRA factors are ordinary), Qwen2-MoE adds a shared expert
with its own fused gate/up width, and the transformers fallback holds the HF modules under ``hf.``.
"""

from __future__ import annotations

import pytest
import torch

from heron.lora import LoRAManager
from heron.testing.models import PagedRunner, tiny_checkpoint, tiny_config

from .conftest import ALL_PROJ
from .test_manager import feed, peft_reference, register, tokens_for, worst

IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
# name -> (model_type, config overrides, PEFT target modules, model_impl)
CASES = {
    "phi3": ("phi3", IDS, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], "auto"),
    "gemma2": ("gemma2", {"head_dim": 16, "query_pre_attn_scalar": 24, "sliding_window": 4,
                          "final_logit_softcapping": 3.0}, ALL_PROJ, "auto"),
    "gpt2": ("gpt2", {"n_inner": 96}, ["c_attn", "c_proj", "c_fc"], "auto"),
    "qwen2_moe": ("qwen2_moe", {**IDS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]}, ALL_PROJ, "auto"),
    "fallback-llama": ("llama", {}, ALL_PROJ, "transformers"),
    "fallback-gpt_neox": ("gpt_neox", {"num_key_value_heads": None}, ["query_key_value", "dense"], "transformers"),
}
PLAN = [{"x": 6, "y": 4}, {"x": 1, "y": 1, "z": 3}, {"x": 1, "z": 1}]


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_matches_transformers_peft(case, tmp_path, make_adapter):
    kind, overrides, targets, impl = CASES[case]
    hf_model = tiny_checkpoint(tiny_config(kind, **overrides), tmp_path)
    adapter_path, _ = make_adapter(hf_model, target_modules=targets)
    runner = PagedRunner.load(tmp_path, "eager", model_impl=impl)
    mgr = LoRAManager(runner.model, max_loras=1, max_lora_rank=8, max_cpu_loras=None, dtype=torch.float32,
                      device=torch.device("cpu"))
    uid = register(mgr, "x", adapter_path)
    tokens = tokens_for(PLAN)
    logits = feed(runner, mgr, PLAN, tokens, {"x": uid, "z": uid})  # y runs on the base model
    diff = worst({"x": logits["x"], "z": logits["z"]}, tokens, peft_reference(hf_model, adapter_path))
    print(f"{case}: adapter vs peft max |logit diff| {diff:.2e}")
    assert diff < 1e-4
    assert worst({"y": logits["y"]}, tokens, hf_model) < 1e-4
    assert worst({"x": logits["x"]}, tokens, hf_model) > 1e-2  # the adapter changes the output
