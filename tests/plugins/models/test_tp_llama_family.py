"""Tensor parallelism in the Llama family: tp 2 and tp 3 give tp 1's logits (fp32).

Every family member (Llama, Mistral, Qwen2, Qwen3, SmolLM3, Granite, OLMo 2, Phi-3) runs
:data:`MIXED_PLAN` (prefills, a chunked prefill mixed with decodes, decodes) at tp 1 in this
process and at tp 2 in two gloo processes; the cases cover tied and untied embeddings, a
vocabulary and an MLP width that do not split evenly, heads split unevenly (9 heads over 3 KV
heads on 2 ranks) and fewer KV heads than ranks (replicated KV heads, incl. OLMo 2's k norm over
the whole k width), on the eager backend and (two cases) torch_sdpa. The ranks start once per
run for all its checkpoints (spawning is slow).
"""

from __future__ import annotations

import pytest
import torch

from heron.interfaces import ModelContext
from heron.plugins import registry
from heron.testing.parallel import compare_tp_many
from tests.helpers_model import tiny_checkpoint, tiny_config

_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # inside the tiny vocabulary
_GRANITE = {"embedding_multiplier": 6.0, "residual_multiplier": 0.3, "attention_multiplier": 0.4, "logits_scaling": 2.5}

#: case -> (model type, config overrides); tp 2
TP2 = {
    "llama": ("llama", {}),
    "llama-tied-uneven-vocab": ("llama", {"tie_word_embeddings": True, "vocab_size": 259}),
    # 9 heads / 3 KV heads over 2 ranks: 6 + 3 heads; odd MLP width; biases on the row-parallel layers
    "llama-uneven-heads-bias": ("llama", {"hidden_size": 72, "num_attention_heads": 9, "num_key_value_heads": 3,
                                          "intermediate_size": 97, "attention_bias": True, "mlp_bias": True}),
    "llama-kv1": ("llama", {"num_key_value_heads": 1}),  # one KV head on both ranks
    "mistral-window": ("mistral", {"sliding_window": 5}),
    "qwen2-tied": ("qwen2", {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", {"head_dim": 16}),
    "smollm3": ("smollm3", {"no_rope_layer_interval": 2}),  # layer 1 is NoPE
    "granite": ("granite", _GRANITE),
    "olmo2": ("olmo2", {}),
    "olmo2-kv1-bias": ("olmo2", {"num_key_value_heads": 1, "attention_bias": True}),
    "phi3-window-tied": ("phi3", {"sliding_window": 4, "tie_word_embeddings": True}),
}
#: tp 3: KV heads 2 + 1 + 1, MLP 34 + 33 + 33 rows, vocabulary 87 + 86 + 86; and 6 heads on 1 KV head
TP3 = {
    "llama-tp3-uneven": ("llama", {"num_key_value_heads": 4, "intermediate_size": 100, "vocab_size": 259}),
    "olmo2-tp3-kv1": ("olmo2", {"hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 1}),
}

#: tp 2 on the torch_sdpa backend (the CPU default; the GPU path too)
TP2_SDPA = {
    "llama-kv1-sdpa": ("llama", {"num_key_value_heads": 1}),
    "qwen3-window-sdpa": ("qwen3", {"head_dim": 16, "use_sliding_window": True, "sliding_window": 5,
                                    "max_window_layers": 1}),
}


def _diffs(tmp_path_factory: pytest.TempPathFactory, cases: dict, tp_size: int,
           backend: str = "eager") -> dict[str, float]:
    paths = []
    for name, (kind, overrides) in cases.items():
        path = tmp_path_factory.mktemp(name)
        tiny_checkpoint(tiny_config(kind, **_IDS, **overrides), path)
        paths.append(path)
    diffs = dict(zip(cases, compare_tp_many(paths, tp_size, backend=backend), strict=True))
    print(f"\ntp {tp_size} ({backend}): max |logit diff| vs tp 1 {diffs}")
    return diffs


@pytest.fixture(scope="module")
def tp2_diffs(tmp_path_factory):
    return _diffs(tmp_path_factory, TP2, 2)


@pytest.fixture(scope="module")
def tp3_diffs(tmp_path_factory):
    return _diffs(tmp_path_factory, TP3, 3)


@pytest.fixture(scope="module")
def tp2_sdpa_diffs(tmp_path_factory):
    return _diffs(tmp_path_factory, TP2_SDPA, 2, "torch_sdpa")


@pytest.mark.parametrize("case", list(TP2))
def test_tp2_matches_tp1(tp2_diffs, case):
    assert tp2_diffs[case] < 1e-5


@pytest.mark.parametrize("case", list(TP3))
def test_tp3_matches_tp1(tp3_diffs, case):
    assert tp3_diffs[case] < 1e-5


@pytest.mark.parametrize("case", list(TP2_SDPA))
def test_tp2_matches_tp1_on_torch_sdpa(tp2_sdpa_diffs, case):
    assert tp2_sdpa_diffs[case] < 1e-5


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3", "smollm3", "granite", "olmo2", "phi3"])
def test_family_declares_tensor_parallel(kind):
    arch = tiny_config(kind, **_IDS).architectures[0]
    assert registry("models").load(arch).supports_tensor_parallel


def _build(config, rank: int, size: int):
    cls = registry("models").load(config.architectures[0])
    return cls(config, ModelContext(torch.float32, torch.device("cpu"), None, tp_rank=rank, tp_size=size))


def test_rank_holds_its_shard_only():
    """At tp 2 rank 1 of 4 heads / 2 KV heads holds 2 + 1 + 1 heads of q/k/v and half the MLP and vocab."""
    model = _build(tiny_config("llama", **_IDS, vocab_size=259), 1, 2)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert (attn.num_heads, attn.num_kv_heads, attn.heads.q_start, attn.heads.kv_start) == (2, 1, 2, 1)
    assert attn.attn.num_heads == 2 and attn.attn.num_kv_heads == 1
    assert attn.qkv_proj.weight.shape == (4 * 16, 64) and attn.o_proj.weight.shape == (64, 32)
    assert mlp.gate_up_proj.weight.shape == (96, 64) and mlp.down_proj.weight.shape == (64, 48)
    assert model.model.embed_tokens.weight.shape == (129, 64) and model.lm_head.weight.shape == (129, 64)


def test_tp1_keeps_plain_layers_and_names():
    """At tp 1 nothing collects: the parameter names and shapes are today's (LoRA, GGUF, kernels rely on them)."""
    model = _build(tiny_config("llama", **_IDS), 0, 1)
    names = {n for n, _ in model.named_parameters()}
    assert {"model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_up_proj.weight", "model.layers.0.mlp.down_proj.weight",
            "model.embed_tokens.weight", "lm_head.weight"} <= names
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(getattr(m, "tp_output", None) is None for m in linears)
    assert model.lora_target("model.layers.0.self_attn.k_proj") == ("model.layers.0.self_attn.qkv_proj", (64, 32))


def test_heads_that_do_not_split_are_refused():
    """4 heads over 2 KV heads cannot go on 3 ranks: a clear error when the model is built."""
    with pytest.raises(ValueError, match="tensor parallel size 3"):
        _build(tiny_config("llama", **_IDS), 0, 3)
