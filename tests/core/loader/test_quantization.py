"""Quantized checkpoints heron cannot run are refused at load, and so is a --quantization it lacks."""

from __future__ import annotations

import json

import pytest

from heron.loader import load_checkpoint
from heron.loader.quantization import SUPPORTED_QUANTIZATION, hf_quantization_method
from heron.testing.models import tiny_checkpoint, tiny_config

#: quantization_config blocks as the quantizers write them -> the method the error must name
CONFIGS = {
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": True},
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True},
    "fp8": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
    "compressed-tensors": {"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {}},
    "bitsandbytes": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "mxfp4": {"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]},
}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    tiny_checkpoint(tiny_config("llama"), path)
    return path


def _with_quantization(hf_dir, tmp_path, quant: dict):
    config = json.loads((hf_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "quantization_config": quant}))
    (tmp_path / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    return tmp_path


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_quantized_hf_checkpoint_is_refused_naming_the_method(hf_dir, tmp_path, method):
    folder = _with_quantization(hf_dir, tmp_path, CONFIGS[method])
    with pytest.raises(ValueError, match=rf"quantized with {method} \(config\.json quantization_config\), which heron"):
        load_checkpoint(str(folder))
    with pytest.raises(ValueError, match=rf"quantized with {method}"):
        load_checkpoint(str(folder), quantization="gguf")


def test_old_bitsandbytes_config_without_quant_method():
    assert hf_quantization_method({"quantization_config": {"load_in_8bit": True}}) == "bitsandbytes"
    assert hf_quantization_method({"torch_dtype": "bfloat16"}) is None


@pytest.mark.parametrize("value", ["awq", "fp8", "bitsandbytes", "int4", "marlin"])
def test_unsupported_quantization_flag_is_refused_naming_value_and_supported(hf_dir, value):
    with pytest.raises(ValueError, match=rf"--quantization '{value}' is not supported; heron supports gguf"):
        load_checkpoint(str(hf_dir), quantization=value)


def test_gguf_flag_needs_a_gguf_checkpoint(hf_dir):
    with pytest.raises(ValueError, match="--quantization gguf does not match .* which is not quantized"):
        load_checkpoint(str(hf_dir), quantization="gguf")


def test_unquantized_checkpoint_loads_without_the_flag(hf_dir):
    assert load_checkpoint(str(hf_dir), quantization=None).hf_config.architectures == ["LlamaForCausalLM"]
    assert SUPPORTED_QUANTIZATION == ("gguf",)


def test_gguf_file_accepts_gguf_in_any_case_and_refuses_others(tmp_path):
    from tests.core.loader.test_gguf import hf_to_gguf

    tiny_checkpoint(tiny_config("qwen2"), tmp_path / "hf")
    out = tmp_path / "q.gguf"
    hf_to_gguf(tmp_path / "hf", "qwen2", out)
    for value in (None, "gguf", "GGUF"):
        assert load_checkpoint(str(out), quantization=value).hf_config.architectures == ["Qwen2ForCausalLM"]
    with pytest.raises(ValueError, match="--quantization 'awq' is not supported"):
        load_checkpoint(str(out), quantization="awq")


def test_the_engine_passes_the_flag_through(hf_dir):
    from heron import LLM

    with pytest.raises(ValueError, match="--quantization 'gptq' is not supported"):
        LLM(str(hf_dir), quantization="gptq")
