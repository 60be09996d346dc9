"""Tiny random-weight checkpoints and a paged runner for model and kernel tests.

The machinery lives in :mod:`heron.testing.models` (plugin authors use it too); this module
keeps the short names the tests use.
"""

from __future__ import annotations

from typing import Any

from heron.testing.models import (
    MIXED_PLAN,
    VOCAB,
    PagedRunner,
    check_against_transformers,
    check_on_every_backend,
    greedy_tokens,
    hf_greedy_tokens,
    hf_reference_logits,
    make_batch,
    run_plan,
    tiny_checkpoint,
)
from heron.testing.models import tiny_config as _tiny_config

__all__ = (
    "MIXED_PLAN",
    "VOCAB",
    "PagedRunner",
    "check_against_transformers",
    "check_on_every_backend",
    "greedy_tokens",
    "hf_greedy_tokens",
    "hf_reference_logits",
    "make_batch",
    "run_plan",
    "tiny_checkpoint",
    "tiny_config",
)


def tiny_config(kind: str = "llama", **overrides: Any) -> Any:
    """:func:`heron.testing.models.tiny_config` with Mistral's default window turned off."""
    if kind == "mistral":
        overrides.setdefault("sliding_window", None)
    return _tiny_config(kind, **overrides)
