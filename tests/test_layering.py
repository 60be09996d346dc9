"""Core never imports the built-in plugins: it reaches them through the registries by name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plugin_imports(folder: Path) -> list[str]:
    """``file:line`` of every import of ``heron_plugins`` in the .py files under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            else:
                continue
            if any(n == "heron_plugins" or n.startswith("heron_plugins.") for n in names):
                found.append(f"{path.relative_to(folder.parent)}:{node.lineno}")
    return found


def test_core_never_imports_heron_plugins():
    offenders = plugin_imports(ROOT / "core")
    assert not offenders, f"core imports heron_plugins (use heron.plugins.registry): {offenders}"


def test_the_check_catches_every_import_form(tmp_path):
    core = tmp_path / "core"
    (core / "engine").mkdir(parents=True)
    (core / "ok.py").write_text("from heron.plugins import registry\nimport heron\n")
    (core / "engine" / "a.py").write_text("import heron_plugins\n")
    (core / "engine" / "b.py").write_text("def f():\n    from heron_plugins.models import llama\n")
    (core / "c.py").write_text("import importlib\nimportlib.import_module('heron_plugins.kernels.eager')\n")
    assert plugin_imports(core) == ["core/c.py:2", "core/engine/a.py:1", "core/engine/b.py:2"]
