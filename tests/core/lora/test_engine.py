"""LoRA through the engine (offline ``LLM``): greedy parity with transformers + peft, mixed batches, slots.

fp32 throughout: equal tokens need equal arithmetic. The adapters have random non-zero A and B,
so they change the output (checked), and the tiny Llama is the one in :mod:`heron.testing.models`.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from heron import LLM, SamplingParams
from heron.lora import LoRAError, LoRARequest
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.core.lora.conftest import save_adapter

PROMPTS = [[5, 17, 99, 3, 42], [200, 1, 1, 7], [64, 65, 66, 67, 68, 69, 70], [9]]
GREEDY = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)


def hf_greedy(model: Any, prompt: list[int], n: int) -> list[int]:
    """Plain argmax decoding with transformers' cache (no stop token, nothing suppressed)."""
    out: list[int] = []
    x, past = torch.tensor([prompt]), None
    with torch.inference_mode():
        for _ in range(n):
            step = model(input_ids=x, past_key_values=past, use_cache=True)
            past = step.past_key_values
            out.append(int(step.logits[0, -1].argmax()))
            x = torch.tensor([[out[-1]]])
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny Llama with a tokenizer, two PEFT adapters on it, and an engine serving two at once."""
    root = tmp_path_factory.mktemp("lora-engine")
    hf = tiny_checkpoint(tiny_config("llama"), root / "model")
    save_tiny_tokenizer(root / "model")
    peft_a = save_adapter(hf, root / "a", seed=1)
    peft_b = save_adapter(hf, root / "b", seed=2, r=4, lora_alpha=8, use_rslora=True,
                          target_modules=["q_proj", "v_proj", "down_proj"])
    llm = LLM(str(root / "model"), dtype="float32", enable_lora=True, max_loras=2, max_lora_rank=8,
              num_kv_blocks=256)
    return {"root": root, "hf": hf, "peft": {"a": peft_a, "b": peft_b}, "llm": llm,
            "req": {"a": LoRARequest("a", 1, str(root / "a")), "b": LoRARequest("b", 2, str(root / "b"))}}


def _tokens(outs: list[Any]) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outs]


@pytest.mark.parametrize("name", ["a", "b"])
def test_greedy_output_equals_transformers_with_peft(tiny, name):
    want = [hf_greedy(tiny["peft"][name], p, 32) for p in PROMPTS]
    got = _tokens(tiny["llm"].generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY, use_tqdm=False,
                                       lora_request=tiny["req"][name]))
    assert got == want
    base = [hf_greedy(tiny["hf"], p, 32) for p in PROMPTS]
    assert got != base, "the adapter must change the output for this test to mean anything"


def test_mixed_batch_equals_each_request_alone(tiny):
    llm, req = tiny["llm"], tiny["req"]
    plan = [None, req["a"], req["b"], None, req["a"], req["b"], req["b"], None]
    prompts = [{"prompt_token_ids": PROMPTS[i % len(PROMPTS)]} for i in range(len(plan))]
    mixed = _tokens(llm.generate(prompts, GREEDY, use_tqdm=False, lora_request=plan))
    alone = [_tokens(llm.generate([p], GREEDY, use_tqdm=False, lora_request=lora))[0]
             for p, lora in zip(prompts, plan, strict=True)]
    assert mixed == alone
    assert mixed[0] != mixed[1] != mixed[2]


def test_more_adapters_than_slots_wait_for_one(tmp_path, tiny):
    """max_loras=1: requests of a second adapter wait until the first's are done; all stay exact."""
    llm = LLM(str(tiny["root"] / "model"), dtype="float32", enable_lora=True, max_loras=1, max_lora_rank=8,
              num_kv_blocks=256)
    plan = [tiny["req"]["a"], tiny["req"]["b"], None, tiny["req"]["a"]]
    prompts = [{"prompt_token_ids": PROMPTS[i]} for i in range(len(plan))]
    got = _tokens(llm.generate(prompts, GREEDY, use_tqdm=False, lora_request=plan))
    peft = [tiny["peft"]["a"], tiny["peft"]["b"], tiny["hf"], tiny["peft"]["a"]]
    assert got == [hf_greedy(m, p["prompt_token_ids"], 32) for m, p in zip(peft, prompts, strict=True)]


def test_adapters_do_not_share_prefix_cache_blocks(tiny):
    """Same 40-token prompt through the base, then the adapter: nothing cached is reused across them."""
    llm = tiny["llm"]
    prompt = {"prompt_token_ids": list(range(1, 41))}
    once = SamplingParams(temperature=0.0, max_tokens=1)
    llm.generate([prompt], once, use_tqdm=False)
    again = llm.generate([prompt], once, use_tqdm=False)[0]
    assert again.num_cached_tokens >= 32  # the base's own blocks are reused
    through = llm.generate([prompt], once, use_tqdm=False, lora_request=tiny["req"]["a"])[0]
    assert through.num_cached_tokens == 0


def test_register_remove_and_errors(tiny, tmp_path):
    engine = tiny["llm"].engine
    engine.add_lora(tiny["req"]["a"])  # same name and path: nothing changes
    assert {r.lora_name for r in engine.list_loras()} >= {"a"}
    with pytest.raises(LoRAError, match="already loaded"):
        engine.add_lora(LoRARequest("a", 9, str(tiny["root"] / "b")))
    save_adapter(tiny["hf"], tmp_path / "dora", use_dora=True)
    with pytest.raises(LoRAError, match="(?i)dora"):
        engine.add_lora(LoRARequest("dora", 3, str(tmp_path / "dora")))
    assert engine.remove_lora("b") is True and engine.remove_lora("b") is False
    assert "b" not in {r.lora_name for r in engine.list_loras()}
    engine.add_lora(tiny["req"]["b"])  # and back
    base = LLM(str(tiny["root"] / "model"), dtype="float32", num_kv_blocks=64)
    with pytest.raises(ValueError, match="--enable-lora"):
        base.generate([{"prompt_token_ids": [1, 2]}], GREEDY, use_tqdm=False, lora_request=tiny["req"]["a"])


@pytest.mark.parametrize(("kernel", "dtype", "module"), [("dense", "float32", "Linear"),
                                                        ("onednn", "bfloat16", "PackedLinear"),
                                                        ("int4", "bfloat16", "Int4Linear")])
def test_every_linear_kernel_serves_adapters(tiny, kernel, dtype, module):
    """The adapter wraps whatever module the kernel made, so each kernel serves it (bf16: close, not equal)."""
    llm = LLM(str(tiny["root"] / "model"), dtype=dtype, linear_kernel=kernel, enable_lora=True, max_lora_rank=8,
              num_kv_blocks=64)
    one = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    base = llm.generate(prompts, one, use_tqdm=False)
    through = llm.generate(prompts, one, use_tqdm=False, lora_request=tiny["req"]["a"])
    wrapped = dict(llm.engine.model.named_modules())["model.layers.0.self_attn.qkv_proj"]
    assert type(wrapped).__name__ == "LoRALinear"
    # the kernel's own module, wrapped (dense keeps the model's layer: an nn.Linear subclass)
    assert module in {c.__name__ for c in type(wrapped.base_layer).__mro__}
    with torch.inference_mode():
        want = [tiny["peft"]["a"](torch.tensor([p])).logits[0, -1].float() for p in PROMPTS]
    for out, ref in zip(through, want, strict=True):
        top = out.outputs[0].logprobs[0]
        best = max(top, key=lambda t: top[t].logprob)
        assert best in torch.topk(ref, 3).indices.tolist()  # the adapter's answer, within bf16 / int4 noise
    assert [o.outputs[0].logprobs[0] for o in base] != [o.outputs[0].logprobs[0] for o in through]
