"""The tool-parser entry points heron declares in pyproject.toml, read from the installed metadata."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

__all__ = ("FOLDER", "FORMATS", "FORMATS_A", "FORMATS_B", "declared", "fixture_module", "load_target")

FOLDER = Path(__file__).resolve().parents[3] / "plugins" / "tool_parsers"
FORMATS_A = (
    "hermes qwen3_json llama3_json llama4_json pythonic llama4_pythonic olmo3 lfm2 mistral granite granite4 "
    "granite-20b-fc internlm jamba hunyuan_a13b xlam phi4_mini_json longcat ernie45 apertus gigachat3"
).split()
FORMATS_B = (
    "deepseek_v3 deepseek_v31 deepseek_v32 kimi_k2 glm45 glm47 qwen3_coder qwen3_xml seed_oss minimax_m2 step3 "
    "functiongemma openai"
).split()
#: every name of the tool-call table in FORMATS.md
FORMATS = FORMATS_A + FORMATS_B


def declared() -> dict[str, str]:
    """Entry name -> "module:Class"."""
    eps = importlib.metadata.entry_points(group="heron.tool_parsers")
    return {ep.name: ep.value for ep in eps if ep.dist is not None and ep.dist.name == "heron"}


def load_target(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def fixture_module(target: str) -> str:
    """The test module of a target's parser module: ``tests.plugins.tool_parsers.test_<module>``."""
    return "tests.plugins.tool_parsers.test_" + target.partition(":")[0].rpartition(".")[2]
