"""The reasoning entry points heron declares in pyproject.toml, read from the installed metadata."""

from __future__ import annotations

import importlib
import importlib.metadata

__all__ = ("FORMATS", "declared", "load_target")

FORMATS = (
    "deepseek_r1 qwen3 deepseek_v3 glm45 mistral granite seed_oss minimax_m2 minimax_m2_append_think "
    "hunyuan_a13b ernie45 olmo3 step3 kimi_k2 cohere_command3 gemma4 openai_gptoss"
).split()


def declared() -> dict[str, str]:
    """Entry name -> "module:Class"."""
    eps = importlib.metadata.entry_points(group="heron.reasoning_parsers")
    return {ep.name: ep.value for ep in eps if ep.dist is not None and ep.dist.name == "heron"}


def load_target(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
