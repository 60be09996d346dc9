"""LoRA adapters on the server (scripted engine): a request's ``model`` selects an adapter, adapters
load and unload at run time inside ``--allowed-lora-dirs`` only, resolvers are asked in their
declared order, ``/v1/models`` lists adapters, and ``heron:lora_requests_info`` reports them."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from litestar.testing import TestClient

from heron.interfaces import LoRAResolver
from heron.lora import LoRARequest
from heron.plugins import registry
from heron.server import ServerSettings, build_app
from heron.server.lora import runtime_updating, startup_adapters
from heron.server.settings import add_serve_arguments, settings_from_args
from tests.core.server.scripted import ScriptedEngine

CHAT, COMPLETIONS, RESPONSES = "/v1/chat/completions", "/v1/completions", "/v1/responses"
LOAD, UNLOAD = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"
MSG = [{"role": "user", "content": "hi"}]
BASE = "SmolLM2-135M-Instruct"
GUARDS = ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "HERON_ALLOW_RUNTIME_LORA_UPDATING")
DOCS = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"


def make_adapter(folder: Path) -> Path:
    """A folder that looks like a PEFT adapter (the scripted engine reads only its config)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    return folder


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(allowed root, a folder outside it), each holding a valid adapter ``a``."""
    root, outside = tmp_path / "allowed", tmp_path / "outside"
    make_adapter(root / "a")
    make_adapter(outside / "a")
    return root, outside


@pytest.fixture
def client(tokenizer, dirs, monkeypatch):
    for var in GUARDS:
        monkeypatch.delenv(var, raising=False)
    clients = []

    def make(**overrides) -> TestClient:
        settings = {"enable_lora": True, "allowed_lora_dirs": [str(dirs[0])], "allow_runtime_lora_updating": True,
                    **overrides}
        engine = ScriptedEngine(tokenizer, "Hello there, friend.")
        engine.max_loras = 2
        c = TestClient(build_app(ServerSettings(**settings), engine, chat_template=tokenizer.chat_template),
                       raise_server_exceptions=False)
        c.__enter__()
        c.engine = engine
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def resolvers():
    """Register in-process resolver classes (removed afterwards); returns the log of their calls."""
    calls: list[tuple[str, str, str]] = []
    undo = []

    def add(name: str, priority: int, answers: dict[str, str]) -> None:
        class Fake(LoRAResolver):
            async def resolve(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
                calls.append((name, base_model_name, lora_name))
                if answers.get(lora_name) == "raise":
                    raise RuntimeError("storage is down")
                path = answers.get(lora_name)
                return LoRARequest(lora_name, 0, path) if path else None

        Fake.priority = priority
        undo.append(registry("lora_resolvers").register(name, Fake))

    add.calls = calls
    yield add
    for u in undo:
        u()


def _error(response, status: int, *, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    if code is not None:
        assert body["code"] == code
    return body["message"]


# -- selecting an adapter by name -----------------------------------------------------------------


def test_model_name_selects_the_adapter_on_every_generating_route(client, dirs):
    c = client()
    c.engine.loras["sql"] = LoRARequest("sql", 7, str(dirs[0] / "a"))
    chat = c.post(CHAT, json={"model": "sql", "messages": MSG})
    assert chat.status_code == 200 and chat.json()["model"] == "sql"
    assert c.engine.seen_loras[-1] == LoRARequest("sql", 7, str(dirs[0] / "a"))
    done = c.post(COMPLETIONS, json={"model": "sql", "prompt": "x", "max_tokens": 3})
    assert done.status_code == 200 and done.json()["model"] == "sql"
    assert c.engine.seen_loras[-1].lora_name == "sql"
    streamed = c.post(CHAT, json={"model": "sql", "messages": MSG, "stream": True})
    assert '"model":"sql"' in streamed.text and c.engine.seen_loras[-1].lora_name == "sql"
    resp = c.post(RESPONSES, json={"model": "sql", "input": "hi"})
    assert resp.status_code == 200 and resp.json()["model"] == "sql"
    assert c.engine.seen_loras[-1].lora_name == "sql"
    base = c.post(CHAT, json={"model": BASE, "messages": MSG})
    assert base.json()["model"] == BASE and c.engine.seen_loras[-1] is None
    c.post(CHAT, json={"messages": MSG})
    assert c.engine.seen_loras[-1] is None


def test_unknown_model_is_404_model_not_found(client, dirs):
    c = client()
    c.engine.loras["sql"] = LoRARequest("sql", 1, str(dirs[0] / "a"))
    message = _error(c.post(CHAT, json={"model": "nope", "messages": MSG}), 404, code="model_not_found")
    assert "nope" in message and "sql" in message and BASE in message
    _error(c.post(COMPLETIONS, json={"model": "nope", "prompt": "x"}), 404, code="model_not_found")
    off = client(enable_lora=False)
    _error(off.post(CHAT, json={"model": "sql", "messages": MSG}), 404, code="model_not_found")


def test_models_lists_adapters_after_the_base(client, dirs):
    c = client()
    c.engine.loras["sql"] = LoRARequest("sql", 1, str(dirs[0] / "a"))
    c.engine.loras["chat"] = LoRARequest("chat", 2, "/srv/chat", base_model_name="my-base")
    cards = c.get("/v1/models").json()["data"]
    assert [card["id"] for card in cards] == [BASE, "sql", "chat"]
    assert cards[1]["root"] == str(dirs[0] / "a") and cards[1]["parent"] == BASE
    assert cards[2]["root"] == "/srv/chat" and cards[2]["parent"] == "my-base"
    assert cards[0]["parent"] is None


def test_pooling_routes_refuse_adapters_and_tokenize_accepts_them(client, dirs):
    c = client()
    c.engine.loras["sql"] = LoRARequest("sql", 1, str(dirs[0] / "a"))
    message = _error(c.post("/v1/embeddings", json={"model": "sql", "input": "x"}), 400)
    assert "adapters serve generation" in message
    assert c.post("/tokenize", json={"model": "sql", "prompt": "hello"}).status_code == 200
    _error(c.post("/tokenize", json={"model": "nope", "prompt": "hello"}), 404, code="model_not_found")


# -- load / unload at run time --------------------------------------------------------------------


def test_load_use_unload_reload(client, dirs):
    c = client()
    ok = c.post(LOAD, json={"lora_name": "sql", "lora_path": str(dirs[0] / "a")})
    assert ok.status_code == 200 and ok.text == "Success: LoRA adapter 'sql' added successfully."
    assert ok.headers["content-type"].startswith("text/plain")
    assert [card["id"] for card in c.get("/v1/models").json()["data"]] == [BASE, "sql"]
    assert c.post(CHAT, json={"model": "sql", "messages": MSG}).status_code == 200
    assert c.engine.seen_loras[-1].lora_path == str((dirs[0] / "a").resolve())
    again = c.post(LOAD, json={"lora_name": "sql", "lora_path": str(dirs[0] / "a")})
    assert _error(again, 400) == "The lora adapter 'sql' has already been loaded."
    gone = c.post(UNLOAD, json={"lora_name": "sql"})
    assert gone.status_code == 200 and gone.text == "Success: LoRA adapter 'sql' removed successfully."
    _error(c.post(CHAT, json={"model": "sql", "messages": MSG}), 404, code="model_not_found")
    assert _error(c.post(UNLOAD, json={"lora_name": "sql"}), 404) == "The lora adapter 'sql' cannot be found."
    relative = c.post(LOAD, json={"lora_name": "sql", "lora_path": "a"})  # relative to the first allowed dir
    assert relative.status_code == 200, relative.text
    assert c.post(CHAT, json={"model": "sql", "messages": MSG}).status_code == 200


def test_load_refusals(client, dirs):
    c = client()
    _error(c.post(LOAD, json={"lora_name": "x"}), 400)  # lora_path missing
    _error(c.post(LOAD, json={"lora_name": BASE, "lora_path": "a"}), 400)
    _error(c.post(LOAD, json={"lora_name": "a/b", "lora_path": "a"}), 400)
    make_adapter(dirs[0] / "empty").joinpath("adapter_config.json").unlink()
    assert "adapter_config.json" in _error(c.post(LOAD, json={"lora_name": "e", "lora_path": "empty"}), 400)
    closed = client(allowed_lora_dirs=[])
    assert "--allowed-lora-dirs" in _error(closed.post(LOAD, json={"lora_name": "x", "lora_path": "a"}), 400)
    off = client(enable_lora=False)
    assert "--enable-lora" in _error(off.post(LOAD, json={"lora_name": "x", "lora_path": "a"}), 400)
    assert not c.engine.loras and not closed.engine.loras and not off.engine.loras


def test_load_refuses_paths_that_leave_the_allowed_dirs(client, dirs):
    root, outside = dirs
    (root / "link").symlink_to(outside / "a", target_is_directory=True)
    sneaky = make_adapter(root / "sneaky")
    (sneaky / "adapter_model.safetensors").unlink()
    (sneaky / "adapter_model.safetensors").symlink_to(outside / "a" / "adapter_model.safetensors")
    c = client()
    for path in ("../outside/a", f"{root}/../outside/a", str(outside / "a"), "link", str(root / "link"), "sneaky"):
        response = c.post(LOAD, json={"lora_name": "evil", "lora_path": path})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"] == "lora_path", path
    assert c.engine.loras == {}
    _error(c.post(CHAT, json={"model": "evil", "messages": MSG}), 404)


def test_routes_exist_only_when_allowed(client, monkeypatch):
    off = client(allow_runtime_lora_updating=False)
    assert _error(off.post(LOAD, json={"lora_name": "x", "lora_path": "a"}), 404) == "Route not found."
    _error(off.post(UNLOAD, json={"lora_name": "x"}), 404)
    for var in GUARDS:
        monkeypatch.setenv(var, "true")
        on = client(allow_runtime_lora_updating=False)
        assert on.post(LOAD, json={"lora_name": "x", "lora_path": "a"}).status_code == 200
        monkeypatch.delenv(var)
    assert not runtime_updating(ServerSettings(), {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "false"})
    assert runtime_updating(ServerSettings(), {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"})


# -- resolvers ------------------------------------------------------------------------------------


def test_resolvers_are_asked_by_priority_then_name(client, dirs, resolvers):
    first, second = make_adapter(dirs[0] / "first"), make_adapter(dirs[0] / "second")
    resolvers("zz_low", -5, {"x": str(second)})
    resolvers("bb_high", 10, {"x": "raise", "y": str(second)})
    resolvers("aa_mid", 0, {"x": str(first), "y": str(first)})
    resolvers("cc_mid", 0, {"x": str(second)})
    c = client()
    assert c.post(CHAT, json={"model": "x", "messages": MSG}).status_code == 200
    # bb_high raised (skipped); aa_mid then (the built-in directory, which finds nothing without a dir)
    assert [name for name, _, _ in resolvers.calls] == ["bb_high", "aa_mid"]
    assert resolvers.calls[0][1:] == (BASE, "x")
    assert c.engine.seen_loras[-1].lora_name == "x" and c.engine.seen_loras[-1].lora_path == str(first)
    c.post(CHAT, json={"model": "x", "messages": MSG})
    assert len(resolvers.calls) == 2  # loaded now: no resolver asked again
    assert c.post(CHAT, json={"model": "y", "messages": MSG}).status_code == 200
    assert c.engine.loras["y"].lora_path == str(second)  # the higher priority won
    assert c.engine.loras["x"].lora_int_id != c.engine.loras["y"].lora_int_id
    resolvers.calls.clear()
    _error(c.post(CHAT, json={"model": "zzz", "messages": MSG}), 404, code="model_not_found")
    assert [name for name, _, _ in resolvers.calls] == ["bb_high", "aa_mid", "cc_mid", "zz_low"]
    assert [card["id"] for card in c.get("/v1/models").json()["data"]] == [BASE, "x", "y"]


def test_found_but_unusable_adapter_tries_the_next_then_400(client, dirs, resolvers):
    broken = dirs[0] / "broken"
    broken.mkdir()
    resolvers("a_broken", 5, {"x": str(broken), "y": str(broken)})
    resolvers("b_good", 0, {"x": str(dirs[0] / "a")})
    c = client()
    assert c.post(CHAT, json={"model": "x", "messages": MSG}).status_code == 200
    assert c.engine.loras["x"].lora_path == str(dirs[0] / "a")
    assert "could not be loaded" in _error(c.post(CHAT, json={"model": "y", "messages": MSG}), 400)


def test_unsafe_names_never_reach_resolvers_nor_without_enable_lora(client, resolvers):
    resolvers("spy", 0, {})
    c = client()
    for name in ("../x", "/etc", "a/b", "..", "x" * 129, "a b"):
        _error(c.post(CHAT, json={"model": name, "messages": MSG}), 404, code="model_not_found")
    assert resolvers.calls == []
    off = client(enable_lora=False)
    _error(off.post(CHAT, json={"model": "fine", "messages": MSG}), 404)
    assert resolvers.calls == []


def test_directory_resolver_serves_folders_and_refuses_escapes(client, dirs):
    root, outside = dirs
    (root / "link").symlink_to(outside / "a", target_is_directory=True)
    c = client(lora_resolver_dir=str(root), allowed_lora_dirs=[])
    assert c.post(CHAT, json={"model": "a", "messages": MSG}).status_code == 200
    assert c.engine.loras["a"].lora_path == str((root / "a").resolve())
    assert c.engine.loras["a"].base_model_name == BASE
    for name in ("link", "../outside/a", str(outside / "a"), "missing", "."):
        _error(c.post(CHAT, json={"model": name, "messages": MSG}), 404, code="model_not_found")
    assert list(c.engine.loras) == ["a"]
    unset = client()
    _error(unset.post(CHAT, json={"model": "a", "messages": MSG}), 404)


def test_the_docs_example_resolver_installs_and_resolves(client, dirs, fake_dist, tmp_path, monkeypatch):
    section = DOCS.read_text().split("## 8. LoRA resolvers", 1)[1]
    source = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    fake_dist("heron-fake-index", {"heron.lora_resolvers": {"fake_index": "heron_fake_index:IndexResolver"}},
              {"heron_fake_index": source})
    index = tmp_path / "adapters.json"
    index.write_text(json.dumps({"support": str(dirs[0] / "a")}))
    monkeypatch.setenv("MY_ADAPTER_INDEX", str(index))
    assert registry("lora_resolvers").origin("fake_index") == "heron-fake-index 0.0.1"
    c = client()
    assert c.post(CHAT, json={"model": "support", "messages": MSG}).status_code == 200
    assert c.engine.seen_loras[-1].lora_path == str(dirs[0] / "a")
    assert c.engine.seen_loras[-1].base_model_name == BASE
    _error(c.post(CHAT, json={"model": "other", "messages": MSG}), 404, code="model_not_found")


# -- metrics and settings -------------------------------------------------------------------------


def test_lora_requests_info_metric(client, tokenizer):
    c = client()
    info = re.compile(r'^heron:lora_requests_info\{(.*)\} (\S+)$', re.MULTILINE)
    idle = info.search(c.get("/metrics").text)
    assert idle is not None and float(idle.group(2)) > 1.6e9
    assert 'max_lora="2"' in idle.group(1) and 'running_lora_adapters=""' in idle.group(1)
    c.engine._lora_of.update({"req-1": "sql", "req-2": "chat"})
    busy = info.search(c.get("/metrics").text).group(1)
    assert 'running_lora_adapters="chat,sql"' in busy and 'waiting_lora_adapters=""' in busy
    c.engine.max_loras = None  # LoRA off: no lora entry in the stats, no gauge
    assert "lora_requests_info" not in c.get("/metrics").text


def test_lora_flags_env_and_startup_adapters():
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--enable-lora", "--lora-modules", "a=/x",
                              '{"name": "b", "path": "/y", "base_model_name": "m"}', "--max-loras", "3",
                              "--max-cpu-loras", "4", "--allowed-lora-dirs", "/d1,/d2"])
    s = settings_from_args(args, {"HERON_LORA_RESOLVER_DIR": "/r", "HERON_MAX_LORA_RANK": "32"})
    assert s.enable_lora and (s.max_loras, s.max_lora_rank, s.max_cpu_loras) == (3, 32, 4)
    assert s.allowed_lora_dirs == ["/d1", "/d2"] and s.lora_resolver_dir == "/r"
    reqs = startup_adapters(s)
    assert [(r.lora_name, r.lora_path, r.base_model_name) for r in reqs] == [("a", "/x", None), ("b", "/y", "m")]
    assert reqs[0].lora_int_id != reqs[1].lora_int_id
    env = settings_from_args(parser.parse_args([]), {"HERON_LORA_MODULES": "a=/x,b=/y", "HERON_ENABLE_LORA": "true",
                                                     "HERON_MAX_CPU_LORAS": "2"})
    assert [m["name"] for m in env.lora_modules] == ["a", "b"] and env.enable_lora and env.max_cpu_loras == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--lora-modules", "no-path"])
    with pytest.raises(SystemExit, match="not an adapter"):
        settings_from_args(parser.parse_args([]), {"HERON_LORA_MODULES": "no-path"})
    from heron.cli.serve_cmd import check_plugins

    assert any("--enable-lora" in p for p in check_plugins(ServerSettings(lora_modules=["a=/x"])))
