"""load_checkpoint on HF directories, GGUF renaming/un-permutation, and build_model errors."""

from __future__ import annotations

import json

import pytest
import torch

from heron.interfaces import ModelContext
from heron.loader import build_model, gguf_to_hf_name, load_checkpoint, unpermute_qk
from heron.plugins import UnknownPluginError, registry
from tests.helpers_model import tiny_checkpoint, tiny_config


def test_hf_directory(tmp_path):
    cfg = tiny_config("llama", eos_token_id=3, max_position_embeddings=96)
    hf = tiny_checkpoint(cfg, tmp_path)
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [5, 3], "temperature": 0.6, "top_p": 0.9, "do_sample": True})
    )
    ckpt = load_checkpoint(str(tmp_path))
    assert ckpt.hf_config.architectures == ["LlamaForCausalLM"]
    assert ckpt.tokenizer is None  # none saved
    assert ckpt.generation_defaults == {"temperature": 0.6, "top_p": 0.9}
    assert ckpt.eos_token_ids == [5, 3]
    assert ckpt.max_model_len == 96
    got = dict(ckpt.weights())
    assert got.keys() == hf.state_dict().keys()
    assert torch.equal(got["model.norm.weight"], hf.state_dict()["model.norm.weight"])


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint heron can read"):
        load_checkpoint(str(tmp_path))


def test_unknown_architecture_lists_installed(tmp_path):
    tiny_checkpoint(tiny_config("llama"), tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    ckpt.hf_config.architectures = ["FancyNewForCausalLM"]
    ctx = ModelContext(torch.float32, torch.device("cpu"), registry("attention_backends").load("eager")())
    with pytest.raises(UnknownPluginError, match="Installed: .*LlamaForCausalLM.*Qwen2ForCausalLM"):
        build_model(ckpt, ctx)


def test_build_model_uses_ctx_dtype_without_random_init(tmp_path):
    tiny_checkpoint(tiny_config("qwen2"), tmp_path)
    ctx = ModelContext(torch.bfloat16, torch.device("cpu"), registry("attention_backends").load("eager")())
    model = build_model(load_checkpoint(str(tmp_path)), ctx)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.training
    assert torch.get_default_dtype() is torch.float32  # restored


def test_gguf_names():
    assert gguf_to_hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert gguf_to_hf_name("output.weight") == "lm_head.weight"
    assert gguf_to_hf_name("output_norm.weight") == "model.norm.weight"
    assert gguf_to_hf_name("blk.12.attn_q.bias") == "model.layers.12.self_attn.q_proj.bias"
    assert gguf_to_hf_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"
    assert gguf_to_hf_name("blk.3.ffn_norm.weight") == "model.layers.3.post_attention_layernorm.weight"
    assert gguf_to_hf_name("rope_freqs.weight") is None
    assert gguf_to_hf_name("blk.0.strange.weight") == "blk.0.strange.weight"


def llama_cpp_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """What llama.cpp's converter does to q/k rows."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("shape", [(24, 5), (24,)])
def test_unpermute_inverts_llama_cpp(shape):
    w = torch.randn(shape)
    assert torch.equal(unpermute_qk(llama_cpp_permute(w, 3), 3), w)
    assert not torch.equal(llama_cpp_permute(w, 3), w)
