"""``--model-impl``: heron's plugin for the architecture, the transformers fallback, or auto (plugin first)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from heron.interfaces import CausalLM, ModelContext
from heron.loader import build_model, load_checkpoint
from heron.loader.model_impl import MODEL_IMPLS, RemoteCodeError, choose_model_impl
from heron.plugins import UnknownPluginError, registry
from tests.helpers_model import tiny_checkpoint, tiny_config

CTX = ModelContext(torch.float32, torch.device("cpu"), None)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    tiny_checkpoint(tiny_config("llama"), path)
    return load_checkpoint(str(path))


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    path = tmp_path_factory.mktemp("neox")
    tiny_checkpoint(tiny_config("gpt_neox", num_key_value_heads=None), path)
    return load_checkpoint(str(path))


def _impl_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("model implementation:")]


def test_auto_picks_the_registered_plugin(llama, caplog):
    with caplog.at_level(logging.INFO, logger="heron.loader"):
        model = build_model(llama, CTX)
    assert type(model) is registry("models").load("LlamaForCausalLM")
    [line] = _impl_lines(caplog)
    assert "LlamaForCausalLM" in line and "--model-impl auto: heron has a LlamaForCausalLM plugin" in line


def test_auto_falls_back_to_transformers_without_a_plugin(neox, caplog):
    assert "GPTNeoXForCausalLM" not in registry("models").names()
    with caplog.at_level(logging.INFO, logger="heron.loader"):
        model = build_model(neox, CTX)
    assert type(model) is registry("models").load("transformers")
    [line] = _impl_lines(caplog)
    assert "the transformers fallback serves GPTNeoXForCausalLM (no heron plugin serves GPTNeoXForCausalLM)" in line


def test_transformers_forces_the_fallback(llama):
    assert type(build_model(llama, CTX, model_impl="transformers")) is registry("models").load("transformers")


@pytest.mark.parametrize("impl", ["heron", "vllm"])
def test_heron_and_its_vllm_alias_use_the_plugin(llama, neox, impl):
    assert type(build_model(llama, CTX, model_impl=impl)) is registry("models").load("LlamaForCausalLM")
    with pytest.raises(UnknownPluginError, match="GPTNeoXForCausalLM"):
        build_model(neox, CTX, model_impl=impl)


def test_the_fallback_is_reached_through_the_registry(neox):
    class FakeFallback(nn.Module, CausalLM):
        def __init__(self, config, ctx):
            super().__init__()

        def forward(self, input_ids, positions, batch):
            return input_ids

        def compute_logits(self, hidden_states):
            return hidden_states

        def load_weights(self, weights):
            pass

    undo = registry("models").register("transformers", FakeFallback)
    try:
        assert isinstance(build_model(neox, CTX), FakeFallback)
    finally:
        undo()


def test_bad_value_lists_the_choices(llama):
    with pytest.raises(ValueError, match="choose one of auto, heron, transformers, vllm"):
        build_model(llama, CTX, model_impl="tensorrt")
    assert MODEL_IMPLS == ("auto", "heron", "transformers", "vllm")


@pytest.fixture
def remote(tmp_path):
    tiny_checkpoint(tiny_config("llama"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["MyCustomForCausalLM"]
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.MyCustomForCausalLM"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return load_checkpoint(str(tmp_path))


@pytest.mark.parametrize("impl", ["auto", "transformers"])
def test_remote_code_checkpoints_are_refused(remote, impl):
    with pytest.raises(RemoteCodeError, match=r"needs remote code .*MyCustomForCausalLM.*heron never runs checkpoint code"):
        build_model(remote, CTX, model_impl=impl)


def test_auto_map_of_a_builtin_architecture_is_not_remote_code(llama):
    llama.hf_config.auto_map = {"AutoConfig": "configuration_llama.LlamaConfig"}
    try:
        assert choose_model_impl(llama.hf_config, "transformers", llama.path)[0] == "transformers"
    finally:
        del llama.hf_config.auto_map


def test_an_architecture_nobody_knows_is_unknown(llama):
    llama.hf_config.architectures = ["FancyNewForCausalLM"]
    try:
        with pytest.raises(UnknownPluginError, match="FancyNewForCausalLM"):
            choose_model_impl(llama.hf_config, "auto", llama.path)
        with pytest.raises(ValueError, match="transformers has no built-in class 'FancyNewForCausalLM'"):
            choose_model_impl(llama.hf_config, "transformers", llama.path)
    finally:
        llama.hf_config.architectures = ["LlamaForCausalLM"]


def test_a_config_only_remote_code_defines_is_refused_at_load_without_a_prompt(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "my_custom", "architectures": ["MyCustomForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_custom.MyConfig",
                     "AutoModelForCausalLM": "modeling_custom.MyCustomForCausalLM"}}))
    # transformers asks on stdin whether to run the code unless told not to: no answer must be needed
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked whether to run remote code"))
    with pytest.raises(RemoteCodeError, match=r"needs remote code: its architecture MyCustomForCausalLM .*never runs"):
        load_checkpoint(str(tmp_path))
