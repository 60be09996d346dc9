"""``heron --version`` and ``heron plugins list|doctor``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import heron
from heron.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"heron {heron.__version__}"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "heron.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("heron ")


def test_plugins_list_json_shows_built_ins(capsys):
    assert main(["plugins", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    llama = next(r for r in rows if r["name"] == "LlamaForCausalLM")
    assert llama["group"] == "heron.models"
    assert llama["target"] == "heron_plugins.models.llama:LlamaForCausalLM"
    assert llama["distribution"] == "heron" and llama["version"] == heron.__version__
    assert llama["status"] == "ok"


def test_plugins_list_group_filter_and_table(capsys):
    assert main(["plugins", "list", "--group", "attention_backends"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["group", "name", "target", "distribution", "version", "status"]
    assert any("torch_sdpa" in line and line.rstrip().endswith("ok") for line in lines)
    assert "LlamaForCausalLM" not in out


def test_doctor_reports_real_errors_and_fails(fake_dist, capsys):
    fake_dist(
        "heron-fake-doctor",
        {"heron.reasoning_parsers": {"doctor_broken": "heron_fake_doctor:Parser"}},
        {"heron_fake_doctor": "import heron_fake_missing_dependency\n"},
    )
    assert main(["plugins", "doctor"]) == 1
    captured = capsys.readouterr()
    assert "FAIL heron.reasoning_parsers:doctor_broken" in captured.err
    assert "No module named 'heron_fake_missing_dependency'" in captured.err
    assert "1 failed" in captured.out
    assert main(["plugins", "list", "--json", "--group", "reasoning_parsers"]) == 0
    rows = json.loads(capsys.readouterr().out)
    broken = next(r for r in rows if r["name"] == "doctor_broken")
    assert broken["status"] == "error" and "heron_fake_missing_dependency" in broken["error"]


def test_doctor_checks_hook_names_arguments_and_middleware_factories(fake_dist, capsys):
    fake_dist(
        "heron-fake-doctor-hooks",
        {"heron.hooks": {"doctor_typos": "heron_fake_doctor_typos"},
         "heron.middlewares": {"doctor_none": "heron_fake_doctor_mw:returns_none",
                               "doctor_ok": "heron_fake_doctor_mw:passes_through"}},
        {"heron_fake_doctor_typos": """
            from heron.plugins import hookimpl

            @hookimpl
            def heron_request_finshed(request_id):
                pass

            @hookimpl
            def heron_shutdown(reson):
                pass
         """,
         "heron_fake_doctor_mw": """
            def returns_none(settings):
                return None

            def passes_through(settings):
                return lambda app: app
         """},
    )
    assert main(["plugins", "doctor"]) == 1
    captured = capsys.readouterr()
    fails = [line for line in captured.err.splitlines() if line.startswith("FAIL")]
    assert fails == [
        "FAIL heron.middlewares:doctor_none (heron_fake_doctor_mw:returns_none): with default ServerSettings(), "
        "the factory returned None; it must return an ASGI middleware, a callable taking app= and returning "
        "the wrapped ASGI app",
        "FAIL heron.hooks:doctor_typos (heron_fake_doctor_typos): 'heron_request_finshed' is not a heron hook; "
        "did you mean 'heron_request_finished'?",
        "FAIL heron.hooks:doctor_typos (heron_fake_doctor_typos): heron_shutdown() is given no argument 'reson'; "
        "did you mean 'reason'? (it passes reason)",
    ]
    assert "2 failed" in captured.out  # two plugins, three problems; doctor_ok passed
    assert main(["plugins", "list", "--json", "--group", "hooks"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "doctor_typos")
    assert row["status"] == "error" and len(row["problems"]) == 2
