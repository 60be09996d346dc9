"""PEFT adapters parse onto heron's (fused) modules with the right scaling; unsupported ones fail clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from heron.lora import LoRAError, LoRARequest, load_adapter
from heron.testing.models import PagedRunner

from .conftest import ALL_PROJ


@pytest.fixture(scope="module")
def model(llama):
    return PagedRunner.load(llama[0], "eager").model


def _load(model, path, max_rank=16):
    return load_adapter(LoRARequest("test", 1, str(path)), model, max_rank=max_rank, dtype=torch.float32)


def _peft_scaling(peft_model, hf_name):
    return peft_model.get_base_model().get_submodule(hf_name).scaling["default"]


def test_maps_projections_onto_fused_rows(model, llama, make_adapter):
    path, peft_model = make_adapter(llama[1])
    adapter = _load(model, path)
    assert adapter.rank == 8
    assert sorted(adapter.weights) == sorted(f"model.layers.{i}.{m}" for i in range(2) for m in (
        "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"))
    qkv = adapter.weights["model.layers.1.self_attn.qkv_proj"]
    assert [rows for rows, _, _ in qkv] == [(0, 64), (64, 32), (96, 32)]  # q, k, v rows of the fused projection
    gate_up = adapter.weights["model.layers.0.mlp.gate_up_proj"]
    assert [rows for rows, _, _ in gate_up] == [(0, 96), (96, 96)]
    assert adapter.weights["model.layers.0.mlp.down_proj"][0][0] is None
    assert adapter.rank_needs()["model.layers.0.self_attn.qkv_proj"] == 24
    k_proj = peft_model.get_base_model().model.layers[1].self_attn.k_proj
    _, a, b = qkv[1]
    torch.testing.assert_close(a, k_proj.lora_A["default"].weight, rtol=0, atol=0)
    torch.testing.assert_close(b, k_proj.lora_B["default"].weight * 2.0, rtol=0, atol=1e-7)  # alpha 16 / r 8
    assert b.abs().max() > 0.01  # init_lora_weights=False: lora_B is not zero


def test_rslora_scaling_matches_peft(model, llama, make_adapter):
    path, peft_model = make_adapter(llama[1], r=4, lora_alpha=8, use_rslora=True, target_modules=["o_proj"])
    adapter = _load(model, path)
    name = "model.layers.0.self_attn.o_proj"
    raw = peft_model.get_base_model().get_submodule(name).lora_B["default"].weight
    _, _, b = adapter.weights[name][0]
    assert _peft_scaling(peft_model, name) == pytest.approx(4.0)  # 8 / sqrt(4)
    torch.testing.assert_close(b, raw * _peft_scaling(peft_model, name), rtol=1e-6, atol=0)


def test_rank_and_alpha_patterns_match_peft(model, llama, make_adapter):
    path, peft_model = make_adapter(
        llama[1], r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"v_proj": 4, "layers.1.mlp.down_proj": 2}, alpha_pattern={"q_proj": 3})
    adapter = _load(model, path)
    checked = 0
    for i in range(2):
        base = peft_model.get_base_model()
        for hf_name, target, shard in ((f"model.layers.{i}.self_attn.q_proj", "self_attn.qkv_proj", 0),
                                       (f"model.layers.{i}.self_attn.v_proj", "self_attn.qkv_proj", 1),
                                       (f"model.layers.{i}.mlp.down_proj", "mlp.down_proj", 0)):
            lora = base.get_submodule(hf_name)
            _, a, b = adapter.weights[f"model.layers.{i}.{target}"][shard]
            assert a.shape[0] == lora.r["default"]
            torch.testing.assert_close(b, lora.lora_B["default"].weight * lora.scaling["default"], rtol=1e-6, atol=0)
            checked += 1
    assert checked == 6
    assert _peft_scaling(peft_model, "model.layers.0.self_attn.q_proj") == pytest.approx(3 / 8)
    assert _peft_scaling(peft_model, "model.layers.1.mlp.down_proj") == pytest.approx(8.0)


def test_bin_weights_load_like_safetensors(model, llama, make_adapter, tmp_path):
    path, _ = make_adapter(llama[1], target_modules=["q_proj"])
    (tmp_path / "adapter_config.json").write_text((path / "adapter_config.json").read_text())
    torch.save(load_file(str(path / "adapter_model.safetensors")), tmp_path / "adapter_model.bin")
    want, got = _load(model, path), _load(model, tmp_path)
    for name, shards in want.weights.items():
        for (r1, a1, b1), (r2, a2, b2) in zip(shards, got.weights[name], strict=True):
            assert r1 == r2 and torch.equal(a1, a2) and torch.equal(b1, b2)


@pytest.mark.parametrize(("config", "message"), [
    ({"use_dora": True}, "DoRA"),
    ({"r": 32}, "rank 32, above --max-lora-rank 16"),
    ({"rank_pattern": {"o_proj": 32}}, "rank 32, above --max-lora-rank 16"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"target_modules": ["embed_tokens"]}, "embedding"),
    ({"target_modules": ["lm_head"]}, "LM head"),
    ({"bias": "lora_only"}, "bias"),
])
def test_unsupported_options_fail_at_load(model, llama, make_adapter, config, message):
    config.setdefault("target_modules", ALL_PROJ)
    path, _ = make_adapter(llama[1], **config)
    with pytest.raises(LoRAError, match=message) as err:
        _load(model, path)
    assert "LoRA adapter 'test'" in str(err.value)


def _edit(path, tmp_path, config=None, tensors=None):
    """A copy of the adapter at ``path`` with its config updated and tensors renamed/replaced."""
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg.update(config or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    weights = load_file(str(path / "adapter_model.safetensors"))
    weights = tensors(weights) if tensors else weights
    save_file(weights, str(tmp_path / "adapter_model.safetensors"))
    return tmp_path


def test_target_the_model_lacks(model, llama, make_adapter, tmp_path):
    path, _ = make_adapter(llama[1], target_modules=["q_proj"])
    bad = _edit(path, tmp_path, tensors=lambda w: {k.replace("q_proj", "qq_proj"): v for k, v in w.items()})
    with pytest.raises(LoRAError, match=r"module 'model.layers.\d.self_attn.qq_proj'.*has no such module"):
        _load(model, bad)


def test_target_that_is_not_linear(model, llama, make_adapter, tmp_path):
    path, _ = make_adapter(llama[1], target_modules=["q_proj"])
    bad = _edit(path, tmp_path, tensors=lambda w: {k.replace("self_attn.q_proj", "input_layernorm"): v
                                                   for k, v in w.items()})
    with pytest.raises(LoRAError, match="not a linear layer"):
        _load(model, bad)


@pytest.mark.parametrize(("config", "message"), [
    ({"peft_type": "IA3"}, "IA3 adapter"),
    ({"use_qalora": True}, "QA-LoRA"),
    ({"lora_bias": True}, "lora_bias"),
    ({"target_parameters": ["mlp.experts.gate_up_proj"]}, "target_parameters"),
    ({"r": 4}, "not rank 4"),
])
def test_config_problems(model, llama, make_adapter, tmp_path, config, message):
    path, _ = make_adapter(llama[1], target_modules=["q_proj"])
    with pytest.raises(LoRAError, match=message):
        _load(model, _edit(path, tmp_path, config=config))


def test_tensor_problems(model, llama, make_adapter, tmp_path):
    path, _ = make_adapter(llama[1], target_modules=["q_proj"])

    def drop_b(w):
        return {k: v for k, v in w.items() if "lora_B" not in k or "layers.1" not in k}

    with pytest.raises(LoRAError, match=r"lacks model.layers.1.self_attn.q_proj.lora_B"):
        _load(model, _edit(path, tmp_path / "a", tensors=drop_b))

    def wrong_width(w):
        return {k: (v[:, :32].contiguous() if "lora_A" in k else v) for k, v in w.items()}

    with pytest.raises(LoRAError, match=r"the model needs \[r, 64\]"):
        _load(model, _edit(path, tmp_path / "b", tensors=wrong_width))

    def extra(w):
        return {**w, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": torch.ones(64)}

    with pytest.raises(LoRAError, match="DoRA magnitude"):
        _load(model, _edit(path, tmp_path / "c", tensors=extra))


def test_missing_files(model, tmp_path):
    with pytest.raises(LoRAError, match="not a directory"):
        _load(model, tmp_path / "nope")
    with pytest.raises(LoRAError, match="adapter_config.json is missing"):
        _load(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16, "peft_type": "LORA"}')
    with pytest.raises(LoRAError, match="neither adapter_model.safetensors nor adapter_model.bin"):
        _load(model, tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LoRAError, match="adapter_model.safetensors cannot be read"):
        _load(model, tmp_path)
