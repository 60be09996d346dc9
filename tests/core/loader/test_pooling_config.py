"""--runner / --convert / --pooler-config: how a checkpoint is served, decided from its files and flags."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from heron.loader import resolve_pooler


def ckpt(path, arch: str, **config):
    return SimpleNamespace(path=str(path), hf_config=SimpleNamespace(architectures=[arch], **config))


def sentence_transformers_folder(path, pooling: str, normalize: bool = True, max_seq_length: int = 256):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({f"pooling_mode_{pooling}": True}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return path


def test_a_decoder_generates_unless_told_otherwise(tmp_path):
    assert resolve_pooler(ckpt(tmp_path, "LlamaForCausalLM")).runner == "generate"
    pooler = resolve_pooler(ckpt(tmp_path, "Qwen3ForCausalLM"), convert="embed")
    assert (pooler.runner, pooler.convert, pooler.pooling_type, pooler.normalize) == ("pooling", "embed", "LAST", True)
    pooler = resolve_pooler(ckpt(tmp_path, "LlamaForCausalLM"), runner="pooling")
    assert (pooler.convert, pooler.pooling_type) == ("embed", "LAST")


def test_encoders_and_classifiers_pool(tmp_path):
    pooler = resolve_pooler(ckpt(tmp_path, "BertModel"))
    assert (pooler.runner, pooler.convert, pooler.pooling_type) == ("pooling", "embed", "CLS")
    pooler = resolve_pooler(ckpt(tmp_path, "BertForSequenceClassification"))
    assert (pooler.runner, pooler.convert) == ("pooling", "classify")
    assert resolve_pooler(ckpt(tmp_path, "GPT2LMHeadModel")).runner == "generate"


@pytest.mark.parametrize(("mode", "want"), [("mean_tokens", "MEAN"), ("cls_token", "CLS"), ("lasttoken", "LAST")])
def test_a_sentence_transformers_folder_says_how_to_pool(tmp_path, mode, want):
    sentence_transformers_folder(tmp_path, mode, normalize=mode != "cls_token", max_seq_length=128)
    pooler = resolve_pooler(ckpt(tmp_path, "BertModel"))
    assert (pooler.runner, pooler.convert, pooler.pooling_type) == ("pooling", "embed", want)
    assert pooler.normalize is (mode != "cls_token") and pooler.max_seq_length == 128
    assert "sentence-transformers" in pooler.why


def test_pooler_config_overrides_and_checks(tmp_path):
    sentence_transformers_folder(tmp_path, "mean_tokens")
    pooler = resolve_pooler(ckpt(tmp_path, "BertModel"), override={"pooling_type": "cls", "normalize": False})
    assert (pooler.pooling_type, pooler.normalize) == ("CLS", False) and "--pooler-config" in pooler.why
    with pytest.raises(ValueError, match="Unknown pooling_type 'MAX'"):
        resolve_pooler(ckpt(tmp_path, "BertModel"), override={"pooling_type": "max"})
    with pytest.raises(ValueError, match="--pooler-config does not know colour"):
        resolve_pooler(ckpt(tmp_path, "BertModel"), override={"colour": 1})


def test_bad_flags_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown runner 'embedding'"):
        resolve_pooler(ckpt(tmp_path, "BertModel"), runner="embedding")
    with pytest.raises(ValueError, match="Unknown convert"):
        resolve_pooler(ckpt(tmp_path, "BertModel"), convert="reward")
    with pytest.raises(ValueError, match="--convert embed needs --runner pooling"):
        resolve_pooler(ckpt(tmp_path, "LlamaForCausalLM"), runner="generate", convert="embed")


def test_matryoshka_dimensions_come_from_the_config(tmp_path):
    assert resolve_pooler(ckpt(tmp_path, "BertModel")).matryoshka_dimensions is None
    assert resolve_pooler(ckpt(tmp_path, "BertModel", matryoshka_dimensions=[64, 32])).matryoshka_dimensions == [64, 32]
    assert resolve_pooler(ckpt(tmp_path, "BertModel", is_matryoshka=True)).matryoshka_dimensions == []


def test_serve_flags_reach_the_engine_config():
    import argparse

    from heron.server.engine_client import engine_config
    from heron.server.settings import add_serve_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--runner", "pooling", "--convert", "embed", "--pooler-config", '{"pooling_type": "MEAN"}',
                              "--model-impl", "vllm", "--quantization", "gguf", "--trust-remote-code"])
    config = engine_config(settings_from_args(args, environ={}))
    assert (config.runner, config.convert, config.pooler_config) == ("pooling", "embed", {"pooling_type": "MEAN"})
    assert (config.model_impl, config.quantization) == ("vllm", "gguf")
    with pytest.raises(SystemExit):
        parser.parse_args(["--runner", "embedding"])
