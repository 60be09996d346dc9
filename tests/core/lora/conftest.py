"""Fixtures for the LoRA tests: a tiny random Llama checkpoint and PEFT adapters made on it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from heron.testing.models import tiny_checkpoint, tiny_config

ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(checkpoint folder, transformers model) of a tiny random Llama."""
    path = tmp_path_factory.mktemp("llama")
    return path, tiny_checkpoint(tiny_config("llama"), path)


def save_adapter(hf_model: Any, path: Path, seed: int = 1, **config: Any) -> Any:
    """Save a PEFT LoRA adapter (random non-zero A and B) for a copy of ``hf_model``; return the PEFT model."""
    from peft import LoraConfig, get_peft_model

    options: dict[str, Any] = {"r": 8, "lora_alpha": 16, "target_modules": ALL_PROJ, "init_lora_weights": False}
    options.update(config)
    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(hf_model), LoraConfig(**options))
    peft_model.save_pretrained(str(path))
    return peft_model.eval()


@pytest.fixture(scope="session")
def make_adapter(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, Any]]:
    """``make_adapter(hf_model, seed=1, **lora_config)`` -> (adapter folder, PEFT model with it applied)."""

    def make(hf_model: Any, seed: int = 1, **config: Any) -> tuple[Path, Any]:
        path = tmp_path_factory.mktemp("adapter")
        return path, save_adapter(hf_model, path, seed, **config)

    return make
