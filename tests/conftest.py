"""Shared fixtures: fake installed distributions whose entry points are real metadata."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, why: str) -> None:
    """Skip locally when a real resource is missing, but fail under CI (CI=true)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {why}")
    pytest.skip(why)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Install a throwaway distribution on sys.path: ``fake_dist(name, entry_points, modules)``.

    ``entry_points`` maps group -> {entry name: "module:attr"}; ``modules`` maps a module name to
    its source. The distribution is found by importlib.metadata exactly like a pip-installed one.
    """

    def make(name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
        root = tmp_path / f"site-{name}"
        info = root / f"{name.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{ep} = {target}" for ep, target in eps.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for mod, source in modules.items():
            (root / f"{mod}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    for mod in [m for m in sys.modules if m.startswith("heron_fake_")]:
        del sys.modules[mod]
