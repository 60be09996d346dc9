"""A plain wheel install into a fresh virtual environment, with the example plugin beside it.

Building the wheel and the venv take ~20 s; heron's heavy dependencies (torch, transformers)
are not reinstalled: the fresh venv sees the project venv's site-packages through a ``.pth``
line (which, unlike a site dir, runs none of that dir's own ``.pth`` files, so heron's editable
finder is not active there). heron itself and the example come only from their wheels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "heron-example-plugin"

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # never from the source tree: `python -c` would find core/ there as a namespace package
    return subprocess.run([str(c) for c in cmd], cwd=cwd or Path(os.sep), env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel-install")
    wheels = tmp / "wheels"
    for src in (ROOT, EXAMPLE):
        _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, src)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    heron_wheel = next(wheels.glob("heron-*.whl"))
    _run(py, "-m", "pip", "install", "--no-deps", "--no-index", heron_wheel)
    return env_dir


def test_wheel_contains_only_heron_packages(fresh_env):
    site = Path(_run(fresh_env / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    assert (site / "heron" / "plugins" / "registry.py").is_file()
    assert (site / "heron_plugins" / "models").is_dir()
    assert not (site / "core").exists() and not (site / "plugins").exists()
    res = _run(fresh_env / "bin/python", "-c", "import core", check=False)
    assert res.returncode != 0 and "No module named 'core'" in res.stderr
    res = _run(fresh_env / "bin/python", "-c", "import heron, heron_plugins; print(heron.__file__)")
    assert str(fresh_env) in res.stdout, "heron must come from the wheel, not the source tree"


def test_example_plugin_is_picked_up_with_no_change_to_heron(fresh_env):
    heron_cli = fresh_env / "bin" / "heron"
    before = json.loads(_run(heron_cli, "plugins", "list", "--json").stdout)
    assert not any(r["distribution"] == "heron-example-plugin" for r in before)
    wheel = next((fresh_env.parent / "wheels").glob("heron_example_plugin-*.whl"))
    _run(fresh_env / "bin/python", "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    rows = json.loads(_run(heron_cli, "plugins", "list", "--json").stdout)
    mine = {(r["group"], r["name"]): r for r in rows if r["distribution"] == "heron-example-plugin"}
    assert set(mine) == {("heron.tool_parsers", "example_bracket"), ("heron.middlewares", "example_header")}
    assert all(r["status"] == "ok" and r["version"] == "0.1.0" for r in mine.values())
    table = _run(heron_cli, "plugins", "list").stdout
    assert "example_bracket" in table and "example_header" in table
