"""vLLM's operational routes: gated as vLLM gates them, with vLLM's shapes and statuses.

Gating, ``/invocations``, ``/tokenizer_info``, ``/server_info`` and the documents run on the
scripted engine; sleep/wake, the prefix-cache reset and the profiler run on a real engine over a
tiny random-weight Llama (byte tokenizer), where the same greedy tokens before and after a sleep
prove that the weights and the KV pool came back intact.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from litestar.testing import TestClient

from heron.engine import AsyncEngine, LLMEngine, SamplingParams
from heron.engine.sleep import EngineSleepingError, _tensor_slots, check_sleep
from heron.loader.pooling_config import PoolerConfig
from heron.server import ServerSettings, build_app
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.core.server.scripted import ScriptedEngine

GATED = [("POST", "/reset_prefix_cache"), ("POST", "/sleep"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
         ("GET", "/server_info"), ("GET", "/tokenizer_info"), ("POST", "/start_profile"), ("POST", "/stop_profile")]
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
#: 40 bytes = 40 tokens of the byte tokenizer: two full KV blocks to cache
PROMPT = "The quick brown fox jumps over the dog. "


@pytest.fixture(autouse=True)
def _no_vllm_env(monkeypatch):
    for var in ("VLLM_SERVER_DEV_MODE", "VLLM_TORCH_PROFILER_DIR"):
        monkeypatch.delenv(var, raising=False)


def _status(client: TestClient, method: str, path: str) -> int:
    return client.request(method, path).status_code


# -- gating ---------------------------------------------------------------------------------------


def test_gated_routes_are_404_without_their_flags(make_client):
    client = make_client()
    for method, path in GATED:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    # always served: SageMaker's routes and the documents
    assert client.post("/ping").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200


def test_each_flag_turns_on_its_routes(make_client, tmp_path):
    tok = make_client(enable_tokenizer_info_endpoint=True)
    assert _status(tok, "GET", "/tokenizer_info") == 200
    assert _status(tok, "GET", "/is_sleeping") == 404
    dev = make_client(server_dev_mode=True)
    assert _status(dev, "GET", "/is_sleeping") == 200 and _status(dev, "GET", "/server_info") == 200
    assert _status(dev, "POST", "/start_profile") == 404 and _status(dev, "GET", "/tokenizer_info") == 404
    prof = make_client(torch_profiler_dir=str(tmp_path))
    assert _status(prof, "POST", "/stop_profile") == 400  # served; nothing to stop (the scripted engine)
    assert _status(prof, "POST", "/sleep") == 404


def test_vllm_environment_variables_turn_routes_on(make_client, monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")
    monkeypatch.setenv("VLLM_TORCH_PROFILER_DIR", str(tmp_path))
    client = make_client()
    assert _status(client, "GET", "/is_sleeping") == 200
    assert _status(client, "POST", "/start_profile") != 404


def test_sleep_needs_enable_sleep_mode(make_client):
    client = make_client(server_dev_mode=True)
    response = client.post("/sleep")
    assert response.status_code == 400 and "--enable-sleep-mode" in response.json()["error"]["message"]


def test_disable_docs_removes_every_docs_route(make_client):
    on = make_client()
    assert on.get("/docs").status_code == 200 and on.get("/openapi.json").json() == on.get("/docs/openapi.json").json()
    off = make_client(disable_docs=True)
    for path in ("/docs", "/docs/openapi.json", "/openapi.json", "/docs/swagger"):
        assert off.get(path).status_code == 404, path
    assert off.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


def test_probes_and_documents_follow_the_api_key(make_client):
    client = make_client(api_key=["sk-ops"])
    assert client.post("/ping").status_code == 200  # a probe: open like GET /ping
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers={"Authorization": "Bearer sk-ops"}).status_code == 200


# -- tokenizer_info and server_info ---------------------------------------------------------------


def test_tokenizer_info_shape(make_client, tokenizer):
    info = make_client(enable_tokenizer_info_endpoint=True).get("/tokenizer_info").json()
    assert info["tokenizer_class"] == type(tokenizer).__name__
    assert info["chat_template"] == tokenizer.chat_template
    assert info["eos_token"] == tokenizer.eos_token and "vocab_file" not in info and "merges_file" not in info
    json.dumps(info)  # every value is plain JSON


def test_server_info_text_and_json(make_client, monkeypatch):
    monkeypatch.setenv("VLLM_SOME_SETTING", "x")
    monkeypatch.setenv("VLLM_API_KEY", "sk-secret")
    client = make_client(server_dev_mode=True, api_key=["sk-one"])
    auth = {"Authorization": "Bearer sk-one"}
    text = client.get("/server_info", headers=auth).json()
    assert isinstance(text["server_settings"], str) and "server_dev_mode=True" in text["server_settings"]
    assert "sk-one" not in json.dumps(text) and "sk-secret" not in json.dumps(text)
    assert text["env"]["VLLM_SOME_SETTING"] == "x" and "VLLM_API_KEY" not in text["env"]
    as_json = client.get("/server_info?config_format=json", headers=auth).json()
    assert as_json["server_settings"]["api_key"] == ["<redacted>"]
    assert as_json["server_settings"]["server_dev_mode"] is True
    bad = client.get("/server_info?config_format=yaml", headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "config_format"


# -- /invocations ---------------------------------------------------------------------------------


def test_invocations_route_by_body_shape(make_client):
    client = make_client("Hello there, friend.")
    chat = client.post("/invocations", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    text = client.post("/invocations", json={"prompt": "Say hi", "max_tokens": 4})
    assert text.status_code == 200 and text.json()["object"] == "text_completion"
    stream = client.post("/invocations", json={"prompt": "Say hi", "max_tokens": 4, "stream": True})
    assert stream.headers["content-type"].startswith("text/event-stream") and stream.text.endswith("data: [DONE]\n\n")
    # the chosen route validates the rest of the body: its own error
    bad = client.post("/invocations", json={"prompt": "x", "max_tokens": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"
    none = client.post("/invocations", json={"input": "embed me"})
    assert none.status_code == 400 and "ChatCompletionRequest" in none.json()["error"]["message"]
    assert client.post("/invocations", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400


def test_invocations_on_a_pooling_model(tokenizer):
    pooler = PoolerConfig("pooling", "embed", pooling_type="MEAN", normalize=True)
    engine = ScriptedEngine(tokenizer, pooler=pooler, hidden_size=8)
    with TestClient(build_app(ServerSettings(), engine), raise_server_exceptions=False) as client:
        embed = client.post("/invocations", json={"input": ["a", "b"]})
        assert embed.status_code == 200 and [d["object"] for d in embed.json()["data"]] == ["embedding"] * 2
        score = client.post("/invocations", json={"text_1": "a", "text_2": ["b", "c"]})
        assert score.status_code == 200 and len(score.json()["data"]) == 2
        rerank = client.post("/invocations", json={"query": "a", "documents": ["b", "c"]})
        assert rerank.status_code == 200 and len(rerank.json()["results"]) == 2
        chat = client.post("/invocations", json={"prompt": "hi"})
        assert chat.status_code == 400 and "RerankRequest" in chat.json()["error"]["message"]


# -- a real engine: sleep, wake, reset, profile ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_checkpoint(tiny_config("llama"), path)
    save_tiny_tokenizer(path)
    return path


def _engine(path: Path, step_pause: float = 0.0) -> AsyncEngine:
    engine = LLMEngine(model=str(path), dtype="float32", num_kv_blocks=64, max_num_seqs=4)
    if step_pause:
        step = engine.step
        engine.step = lambda: (time.sleep(step_pause), step())[1]  # long enough to catch a request mid-way
    return AsyncEngine(engine)


@pytest.fixture
def served(tiny_path, tmp_path):
    engine = _engine(tiny_path)
    settings = ServerSettings(model=str(tiny_path), server_dev_mode=True, enable_sleep_mode=True,
                              torch_profiler_dir=str(tmp_path / "profiles"), enable_tokenizer_info_endpoint=True)
    with TestClient(build_app(settings, engine, chat_template=TEMPLATE), raise_server_exceptions=False) as client:
        client.engine = engine
        yield client
    engine.shutdown()


def _greedy(client: TestClient, prompt: str = PROMPT, n: int = 12) -> dict:
    response = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": n, "temperature": 0,
                                                     "ignore_eos": True})
    assert response.status_code == 200, response.text
    return response.json()


def _tokens(body: dict) -> str:
    return body["choices"][0]["text"]


def _weight_numel(engine: LLMEngine) -> int:
    return sum(t.numel() for _, _, t in _tensor_slots(engine.model))


@pytest.mark.parametrize("level", [1, 2])
def test_sleep_frees_memory_and_wake_restores_the_same_tokens(served, level):
    inner: LLMEngine = served.engine.engine
    before = _tokens(_greedy(served))
    weights = _weight_numel(inner)
    assert served.post(f"/sleep?level={level}").status_code == 200
    assert served.get("/is_sleeping").json() == {"is_sleeping": True}
    state = inner.sleep_state
    assert state.kv_released and state.kv_bytes == inner.kv_cache_bytes > 0
    assert all(layer.kv_cache is None for layer in inner.model.modules() if hasattr(layer, "kv_cache"))
    assert state.weights_released is (level == 2)
    assert _weight_numel(inner) == (0 if level == 2 else weights)
    if level == 2:
        assert state.weight_bytes >= weights * 4  # fp32
    for path, body in (("/v1/completions", {"prompt": "hi"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/invocations", {"prompt": "hi"})):
        asleep = served.post(path, json=body)
        assert asleep.status_code == 503 and asleep.json()["error"]["code"] == "model_sleeping", path
    assert served.post("/tokenize", json={"prompt": "hi"}).status_code == 200  # no weights needed
    assert served.post("/wake_up").status_code == 200
    assert served.get("/is_sleeping").json() == {"is_sleeping": False}
    assert _weight_numel(inner) == weights
    assert _tokens(_greedy(served)) == before


def test_wake_up_by_tags(served):
    inner: LLMEngine = served.engine.engine
    before = _tokens(_greedy(served))
    assert served.post("/sleep?level=2").status_code == 200
    assert served.post("/wake_up?tags=weights").status_code == 200
    assert served.get("/is_sleeping").json()["is_sleeping"] is True  # the KV cache is still away
    assert not inner.sleep_state.weights_released and inner.sleep_state.kv_released
    bad = served.post("/wake_up?tags=everything")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tags"
    assert served.post("/wake_up?tags=kv_cache").status_code == 200
    assert served.get("/is_sleeping").json()["is_sleeping"] is False
    assert _tokens(_greedy(served)) == before


def test_sleep_rejects_bad_levels_and_modes(served):
    for query, param in (("level=3", "level"), ("level=one", "level"), ("mode=later", "mode")):
        response = served.post(f"/sleep?{query}")
        assert response.status_code == 400 and response.json()["error"]["param"] == param, query
    assert served.get("/is_sleeping").json()["is_sleeping"] is False
    with pytest.raises(ValueError, match="LoRA"):
        check_sleep(SimpleNamespace(lora=object()), 2)


def test_reset_prefix_cache_makes_a_repeated_prompt_uncached(served):
    _greedy(served, n=2)
    assert _greedy(served, n=2)["usage"]["prompt_tokens_details"]["cached_tokens"] == 32  # two full blocks
    assert served.post("/reset_prefix_cache").status_code == 200
    assert _greedy(served, n=2)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert served.engine.engine.blocks.usage() == 0.0


def test_profile_writes_a_trace(served, tmp_path):
    assert served.post("/stop_profile").status_code == 400  # not running
    assert served.post("/start_profile").status_code == 200
    again = served.post("/start_profile")
    assert again.status_code == 400 and "already running" in again.json()["error"]["message"]
    _greedy(served, n=3)
    assert served.post("/stop_profile").status_code == 200
    traces = list((tmp_path / "profiles").glob("heron-engine.*.pt.trace.json.gz"))
    assert len(traces) == 1
    events = json.loads(gzip.decompress(traces[0].read_bytes()))["traceEvents"]
    names = {e.get("name", "") for e in events}
    assert any(n.startswith("aten::") for n in names), sorted(names)[:20]


# -- what happens to open requests ----------------------------------------------------------------


def _run(engine: AsyncEngine, mode: str, params: SamplingParams, ids: list[int]) -> tuple[list[int], str]:
    """Start a request, put the engine to sleep in ``mode`` after its first token, wake it, and
    return the request's tokens and finish reason."""

    async def main() -> tuple[list[int], str]:
        first = asyncio.Event()
        tokens: list[int] = []
        reason: list[str] = []

        async def consume() -> None:
            async for out in engine.generate(ids, params, "r1"):
                tokens.extend(out.outputs[0].token_ids)
                first.set()
                if out.finished:
                    reason.append(out.outputs[0].finish_reason)

        task = asyncio.ensure_future(consume())
        await first.wait()
        await engine.sleep(1, mode)
        assert engine.is_sleeping
        with pytest.raises(EngineSleepingError):
            async for _ in engine.generate(ids, params, "r2"):
                pass
        if mode != "keep":
            await asyncio.wait_for(task, 10)
        await engine.wake_up()
        await asyncio.wait_for(task, 30)
        return tokens, reason[0]

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["abort", "wait", "keep"])
def test_sleep_modes(tiny_path, mode):
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    ids = list(PROMPT.encode())
    engine = _engine(tiny_path, step_pause=0.01)
    try:
        reference = asyncio.run(_collect(engine, ids, params))
        tokens, reason = _run(engine, mode, params, ids)
        preempted = engine.engine.scheduler.num_preemptions
    finally:
        engine.shutdown()
    if mode == "abort":  # vLLM's default: the open request ends at once
        assert reason == "abort" and 0 < len(tokens) < 20 and tokens == reference[:len(tokens)]
    else:  # wait: it finished before the engine slept; keep: it was paused, recomputed, and went on
        assert reason == "length" and tokens == reference
        assert preempted == (1 if mode == "keep" else 0)


async def _collect(engine: AsyncEngine, ids: list[int], params: SamplingParams) -> list[int]:
    tokens: list[int] = []
    async for out in engine.generate(ids, params, f"ref-{threading.get_ident()}-{time.monotonic_ns()}"):
        tokens.extend(out.outputs[0].token_ids)
    return tokens


def test_tensor_slots_cover_every_parameter(tiny_path):
    engine = LLMEngine(model=str(tiny_path), dtype="float32", num_kv_blocks=16)
    slots = {id(t) for _, _, t in _tensor_slots(engine.model)}
    assert all(id(p) in slots for p in engine.model.parameters())
    assert not any(isinstance(t, torch.Tensor) and t.numel() == 0 for _, _, t in _tensor_slots(engine.model))


def test_reset_keeps_the_blocks_requests_hold_cached():
    from heron.engine.block_manager import BlockManager
    from tests.core.engine.fakes import make_seq

    bm = BlockManager(16, 4)
    held, done = make_seq(list(range(12))), make_seq(list(range(100, 112)))
    for seq in (held, done):
        assert bm.allocate(seq, 12)
        seq.num_computed_tokens = 12
        bm.commit(seq)
    bm.free_seq(done)
    assert bm.evict_cached_free() == 3  # the finished request's three full blocks
    assert bm.match_prefix(make_seq(list(range(100, 112)))) == 0
    assert bm.match_prefix(make_seq(list(range(12)))) == 8  # the running one still shares its prefix
