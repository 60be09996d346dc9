"""Every tool-call format (and the reasoning pairs real models use) through ``heron serve``.

A test-only model plugin (:mod:`tests.e2e.replay`) replays an exact token sequence with a
tokenizer whose markers are special or added tokens the way the real model families have them,
so the served path meets what it meets in production: the detokenizer drops special tokens
unless a parser's ``adjust_request`` keeps them, and those no parser consumed must still stay out
of the answer. One server per family (the parser is a server flag), driven by the openai SDK,
whole and streamed: tool calls (names, arguments, ids where the format has its own), the text
around them, reasoning, ``finish_reason``, and no special-token text in content or reasoning.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import need
from tests.e2e.replay.checkpoint import (
    ARCHITECTURE,
    TEMPLATE_TOKENS,
    ReplayCheckpoint,
    write_checkpoint,
)
from tests.e2e.replay.formats import FAMILIES, STRAY, TOOLS, Case, Family
from tests.e2e.server_fixture import ServerProcess, _LogOnFailure

REPO = Path(__file__).resolve().parents[2]
SERVER_FLAGS = ("--no-enable-prefix-caching", "--kv-cache-memory-bytes", "1MiB", "--dtype", "float32",
                "--max-num-seqs", "4", "--served-model-name", "replay")


def _plugin_dist(root: Path) -> Path:
    """An installed-looking distribution whose ``heron.models`` entry point is the replay model."""
    info = root / "heron_replay_test-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: heron-replay-test\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(
        f"[heron.models]\n{ARCHITECTURE} = tests.e2e.replay.model:{ARCHITECTURE}\n")
    return root


class _Fleet:
    """The servers of this module, started ahead of use (``AHEAD`` at a time) and stopped after it.

    Server start-up is mostly imports; overlapping a few of them keeps the suite's wall time
    near ``families x per-request time`` instead of ``families x start-up``.
    """

    AHEAD = 3

    def __init__(self, request: pytest.FixtureRequest, root: Path, order: list[str]) -> None:
        self.request, self.root, self.order = request, root, order
        self.started: dict[str, tuple[ServerProcess, ReplayCheckpoint]] = {}
        self.reporters: dict[str, _LogOnFailure] = {}

    def _start(self, name: str) -> None:
        if name in self.started:
            return
        family = FAMILIES[name]
        folder = self.root / name.replace("+", "-")
        checkpoint = write_checkpoint(folder / "model", family)
        flags = [str(checkpoint.folder), *SERVER_FLAGS, *family.flags]
        self.started[name] = (ServerProcess(flags, folder / "serve.log"), checkpoint)

    def server(self, name: str) -> tuple[ServerProcess, ReplayCheckpoint]:
        """Start ``name`` (and the next ones) if needed and wait until it is healthy."""
        at = self.order.index(name) if name in self.order else len(self.order)
        for ahead in [name, *self.order[at + 1 : at + self.AHEAD]]:
            self._start(ahead)
        server, checkpoint = self.started[name]
        self.reporters[name] = _LogOnFailure(server, "fleet")  # attaches the log to a failing test
        self.request.config.pluginmanager.register(self.reporters[name])
        server.wait_ready()
        return server, checkpoint

    def done(self, name: str) -> None:
        """Ask ``name``'s server to stop (reaped at the end of the module)."""
        server, _ = self.started[name]
        if name in self.reporters:
            self.request.config.pluginmanager.unregister(self.reporters.pop(name))
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        for name in list(self.reporters):
            self.request.config.pluginmanager.unregister(self.reporters.pop(name))
        for server, _ in self.started.values():
            server.stop()


@pytest.fixture(scope="module")
def fleet(request, tmp_path_factory):
    """Starts each family's ``heron serve`` with the replay model plugin on its PYTHONPATH."""
    root = tmp_path_factory.mktemp("replay")
    paths = [str(_plugin_dist(root / "site")), str(REPO), os.environ.get("PYTHONPATH", "")]
    patch = pytest.MonkeyPatch()
    patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))  # read by ServerProcess
    order = [item.callspec.params["family_name"] for item in request.session.items  # this module's cases only
             if hasattr(item, "callspec") and "family_name" in item.callspec.params]
    fleet = _Fleet(request, root, order)
    try:
        yield fleet
    finally:
        fleet.close()
        patch.undo()


def _ask(family: Family, checkpoint, case: Case) -> dict:
    body = {"messages": [{"role": "user", "content": f"Please answer {checkpoint.case_tokens[case.name]} now."}],
            "model": "replay"}
    if family.tool_parser:
        body["tools"] = TOOLS
    return body


def _whole(client, body: dict) -> dict:
    resp = client.chat.completions.create(**body)
    choice = resp.choices[0]
    msg = choice.message
    calls = [(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or []]
    return {"content": msg.content or None, "reasoning": getattr(msg, "reasoning", None) or None, "calls": calls,
            "finish_reason": choice.finish_reason}


def _streamed(client, body: dict) -> dict:
    content, reasoning, calls, finish = "", "", {}, None
    for chunk in client.chat.completions.create(**body, stream=True):
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning", None) or ""
            for c in delta.tool_calls or []:
                slot = calls.setdefault(c.index, {"id": None, "name": None, "arguments": ""})
                if c.id:
                    assert slot["id"] is None, "a call's id is sent once"
                    slot["id"] = c.id
                if c.function and c.function.name:
                    assert slot["name"] is None, "a call's name is sent once"
                    slot["name"] = c.function.name
                slot["arguments"] += (c.function.arguments if c.function else None) or ""
            finish = choice.finish_reason or finish
    assert sorted(calls) == list(range(len(calls))), "call indexes start at 0 and rise by one"
    return {"content": content or None, "reasoning": reasoning or None, "finish_reason": finish,
            "calls": [(calls[i]["id"], calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)]}


def _check(family: Family, case: Case, got: dict, how: str) -> None:
    where = f"{family.name}/{case.name} ({how})"
    assert [(name, json.loads(args)) for _, name, args in got["calls"]] == case.calls, where
    assert got["content"] == case.content, where
    assert got["reasoning"] == case.reasoning, where
    assert got["finish_reason"] == ("tool_calls" if case.calls else "stop"), where
    if case.ids is not None:
        assert [i for i, _, _ in got["calls"]] == case.ids, where
    assert all(i for i, _, _ in got["calls"]), f"{where}: every call has an id"
    leaked = [t for t in (*family.special, *family.eos, *TEMPLATE_TOKENS, STRAY)
              for text in (got["content"], got["reasoning"]) if text and t in text]
    assert not leaked, f"{where}: special tokens leaked into the answer: {leaked}"


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_format_served_whole_and_streamed(fleet, family_name):
    need(importlib.util.find_spec("openai") is not None, "the openai SDK is not installed")
    import openai

    family = FAMILIES[family_name]
    server, checkpoint = fleet.server(family_name)
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    try:
        _serve_cases(client, family, checkpoint)
    finally:
        fleet.done(family_name)


def _serve_cases(client, family: Family, checkpoint: ReplayCheckpoint) -> None:
    from heron.chat import special_token_texts

    special = special_token_texts(checkpoint.tokenizer)
    assert {*family.special, STRAY} <= special and not special & set(family.added), \
        f"{family.name}: the replay vocabulary must mark its markers as the real family does"
    for case in family.cases:
        body = _ask(family, checkpoint, case)
        whole = _whole(client, body)
        _check(family, case, whole, "whole")
        streamed = _streamed(client, body)
        _check(family, case, streamed, "streamed")
        assert [c[1:] for c in streamed["calls"]] == [c[1:] for c in whole["calls"]], f"{family.name}/{case.name}"
        if STRAY in case.text:  # a client that asks for special tokens gets the unconsumed ones verbatim
            kept = _whole(client, {**body, "extra_body": {"skip_special_tokens": False}})
            assert STRAY in (kept["content"] or "") + (kept["reasoning"] or ""), \
                f"{family.name}/{case.name}: {kept}"
