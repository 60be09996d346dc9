"""A LoRA adapter on the real default model: heron's greedy output equals transformers + peft (fp32).

The adapter is made by the test with peft on transformers' SmolLM2 (the same dequantized weights
heron serves), rank 8 on all seven projections, with random non-zero ``lora_B`` so it changes what
the model says. Four chat prompts, 32 tokens each, EOS ignored on both sides.
"""

from __future__ import annotations

import copy

import pytest
import torch

from heron import LLM, SamplingParams
from heron.lora import LoRARequest
from tests.core.lora.test_engine import hf_greedy

pytestmark = pytest.mark.slow

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def adapter(hf_model, tmp_path_factory):
    """(folder, PEFT model) of a rank-8 adapter on a copy of transformers' SmolLM2."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(hf_model), LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op adapter); make it change the output
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    folder = tmp_path_factory.mktemp("smollm2-lora")
    model.save_pretrained(str(folder))
    return folder, model.eval()


def test_adapter_greedy_equals_transformers_with_peft(adapter, hf_model, chat_prompts):
    folder, peft_model = adapter
    prompts = chat_prompts[:4]
    llm = LLM(dtype="float32", linear_kernel="dense", enable_lora=True, max_lora_rank=8, num_kv_blocks=256)
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    got = [list(o.outputs[0].token_ids) for o in llm.generate(
        [{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False,
        lora_request=LoRARequest("smol", 1, str(folder)))]
    want = [hf_greedy(peft_model, p, 32) for p in prompts]
    assert got == want
    base = [hf_greedy(hf_model, p, 32) for p in prompts]
    assert all(g != b for g, b in zip(got, base, strict=True)), "the adapter changes every answer"
