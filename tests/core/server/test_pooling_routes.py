"""The pooling endpoints (embeddings, pooling, classify, score, rerank) with a scripted pooling engine:
whole response shapes, errors, base64, Matryoshka dimensions, truncation, score pairing, rerank order."""

from __future__ import annotations

import base64
import struct

import pytest
import torch
from litestar.testing import TestClient

from heron.loader.pooling_config import PoolerConfig
from heron.server import ServerSettings, build_app
from tests.core.server.scripted import ScriptedEngine, fake_hidden

H = 8


@pytest.fixture
def make_pooling(tokenizer):
    clients = []

    def make(convert="embed", *, matryoshka=None, max_seq_length=None, num_labels=0, max_model_len=2048,
             **settings):
        pooler = PoolerConfig("pooling", convert, pooling_type="MEAN", normalize=True,
                              max_seq_length=max_seq_length, matryoshka_dimensions=matryoshka)
        engine = ScriptedEngine(tokenizer, max_model_len=max_model_len, pooler=pooler, hidden_size=H,
                                num_labels=num_labels)
        client = TestClient(build_app(ServerSettings(**settings), engine, chat_template=tokenizer.chat_template),
                            raise_server_exceptions=False)
        client.__enter__()
        client.engine = engine
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _embed(tokenizer, text: str, dims: int | None = None) -> list[float]:
    ids = tokenizer.encode(text, add_special_tokens=True)
    data = fake_hidden(ids, H).mean(0)[:dims]
    return torch.nn.functional.normalize(data, dim=-1).tolist()


def _error(resp, status: int, param: str | None) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param, err
    return err["message"]


# -- /v1/embeddings ---------------------------------------------------------------------------


def test_embeddings_shape(make_pooling, tokenizer):
    client = make_pooling()
    body = client.post("/v1/embeddings", json={"input": ["hello world", "good night"]}).json()
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    assert body["object"] == "list" and body["id"].startswith("embd-") and body["model"] == client.get("/v1/models").json()["data"][0]["id"]
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == H for d in body["data"])
    assert body["data"][0]["embedding"] == pytest.approx(_embed(tokenizer, "hello world"), abs=1e-6)
    n = sum(len(tokenizer.encode(t)) for t in ("hello world", "good night"))
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
    _, params = client.engine.seen[-1]
    assert params.task == "embed" and params.normalize is None


def test_embeddings_input_forms(make_pooling, tokenizer):
    client = make_pooling()
    ids = tokenizer.encode("hello world")
    for inp, count in (("hi", 1), (ids, 1), ([ids, ids], 2), (["a", "b", "c"], 3)):
        body = client.post("/v1/embeddings", json={"input": inp}).json()
        assert len(body["data"]) == count, inp
    assert client.engine.seen[1][0] == ids


def test_embeddings_base64_round_trip(make_pooling):
    client = make_pooling()
    floats = client.post("/v1/embeddings", json={"input": "hello"}).json()["data"][0]["embedding"]
    b64 = client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(floats, abs=1e-7)


def test_embeddings_dimensions(make_pooling, tokenizer):
    client = make_pooling(matryoshka=[])
    body = client.post("/v1/embeddings", json={"input": "hello", "dimensions": 4}).json()
    assert body["data"][0]["embedding"] == pytest.approx(_embed(tokenizer, "hello", 4), abs=1e-6)
    assert client.engine.seen[-1][1].dimensions == 4
    _error(client.post("/v1/embeddings", json={"input": "x", "dimensions": H + 1}), 400, "dimensions")
    _error(client.post("/v1/embeddings", json={"input": "x", "dimensions": 0}), 400, "dimensions")
    listed = make_pooling(matryoshka=[2, 4])
    assert listed.post("/v1/embeddings", json={"input": "x", "dimensions": 2}).status_code == 200
    _error(listed.post("/v1/embeddings", json={"input": "x", "dimensions": 3}), 400, "dimensions")
    plain = make_pooling()
    assert "Matryoshka" in _error(plain.post("/v1/embeddings", json={"input": "x", "dimensions": 4}), 400,
                                  "dimensions")


def test_embeddings_errors(make_pooling):
    client = make_pooling(max_prompts_per_request=2)
    _error(client.post("/v1/embeddings", json={"input": []}), 400, "input")
    _error(client.post("/v1/embeddings", json={"input": "x", "encoding_format": "hex"}), 400, "encoding_format")
    _error(client.post("/v1/embeddings", json={}), 400, "input")
    _error(client.post("/v1/embeddings", json={"input": ["a", "b", "c"]}), 400, "input")
    _error(client.post("/v1/embeddings", json={"input": [[1, 10**9]]}), 400, "input")
    _error(client.post("/v1/embeddings", json={"input": "x", "truncate_prompt_tokens": 0}), 400,
           "truncate_prompt_tokens")
    _error(client.post("/v1/embeddings", json={"input": "x", "truncate_prompt_tokens": 10**6}), 400,
           "truncate_prompt_tokens")
    assert client.post("/v1/embeddings", json={"input": "x", "model": "nope"}).status_code == 404
    assert client.engine.active == set()


def test_embeddings_truncation(make_pooling, tokenizer):
    text = "one two three four five six seven eight nine ten"
    ids = tokenizer.encode(text)
    assert len(ids) > 6
    client = make_pooling(max_seq_length=6)
    body = client.post("/v1/embeddings", json={"input": text}).json()
    assert client.engine.seen[-1][0] == ids[:6] and body["usage"]["prompt_tokens"] == 6
    client.post("/v1/embeddings", json={"input": text, "truncate_prompt_tokens": 3})
    assert client.engine.seen[-1][0] == ids[:3]
    client.post("/v1/embeddings", json={"input": text, "truncate_prompt_tokens": -1})
    assert client.engine.seen[-1][0] == ids[:6]
    client.post("/v1/embeddings", json={"input": ids, "truncate_prompt_tokens": 2})
    assert client.engine.seen[-1][0] == ids[:2]
    short = make_pooling(max_model_len=4)
    short.post("/v1/embeddings", json={"input": text})
    assert short.engine.seen[-1][0] == ids[:4]


def test_embeddings_messages(make_pooling, tokenizer):
    client = make_pooling()
    msgs = [{"role": "user", "content": "hi there"}]
    body = client.post("/v1/embeddings", json={"messages": msgs}).json()
    assert len(body["data"]) == 1
    text = tokenizer.decode(client.engine.seen[-1][0])
    assert text.endswith("<|im_start|>user\nhi there<|im_end|>\n")  # no generation prompt by default
    _error(client.post("/v1/embeddings", json={"messages": msgs, "input": "x"}), 400, "input")
    _error(client.post("/v1/embeddings", json={"messages": []}), 400, "messages")


def test_wrong_runner_both_ways(make_pooling, make_client):
    pooling = make_pooling()
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "hi"})):
        assert "--runner generate" in _error(pooling.post(path, json=body), 400, "model")
    generate = make_client()
    for path, body in (("/v1/embeddings", {"input": "x"}), ("/pooling", {"input": "x"}),
                       ("/classify", {"input": "x"}), ("/score", {"text_1": "a", "text_2": "b"}),
                       ("/rerank", {"query": "a", "documents": ["b"]})):
        assert "--runner pooling" in _error(generate.post(path, json=body), 400, "model")
    assert generate.engine.seen == [] and pooling.engine.seen == []


def test_models_capabilities(make_pooling, make_client):
    assert make_client().get("/v1/models").json()["data"][0]["capabilities"] == ["generate"]
    card = make_pooling().get("/v1/models").json()["data"][0]
    assert card["runner"] == "pooling" and card["capabilities"] == ["embed", "encode", "score"]
    card = make_pooling("classify", num_labels=3).get("/v1/models").json()["data"][0]
    assert card["capabilities"] == ["classify"]
    assert make_pooling("classify", num_labels=1).get("/v1/models").json()["data"][0]["capabilities"] == [
        "classify", "score"]


# -- /pooling and /classify -------------------------------------------------------------------


def test_pooling_raw_tensor(make_pooling, tokenizer):
    client = make_pooling()
    body = client.post("/pooling", json={"input": "hello world"}).json()
    assert body["object"] == "list" and body["id"].startswith("pool-")
    item = body["data"][0]
    assert item["object"] == "pooling" and item["index"] == 0
    ids = tokenizer.encode("hello world")
    assert torch.tensor(item["data"]) == pytest.approx(fake_hidden(ids, H), abs=1e-6)  # [n, H] nested lists
    assert client.engine.seen[-1][1].task == "encode"
    body = client.post("/pooling", json={"input": "hello", "task": "embed"}).json()
    assert len(body["data"][0]["data"]) == H
    _error(client.post("/pooling", json={"input": "hello", "task": "classify"}), 400, "model")


def test_classify(make_pooling):
    client = make_pooling("classify", num_labels=3)
    body = client.post("/classify", json={"input": ["good", "bad"]}).json()
    assert body["object"] == "list" and body["id"].startswith("classify-")
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}
    for i, item in enumerate(body["data"]):
        assert set(item) == {"index", "label", "probs", "num_classes"} and item["index"] == i
        assert item["num_classes"] == 3 and sum(item["probs"]) == pytest.approx(1.0, abs=1e-6)
        best = max(range(3), key=item["probs"].__getitem__)
        assert item["label"] == f"label_{best}"
    _error(client.post("/classify", json={"input": []}), 400, "input")
    _error(make_pooling().post("/classify", json={"input": "x"}), 400, "model")
    _error(client.post("/v1/embeddings", json={"input": "x"}), 400, "model")


# -- /score and /rerank -------------------------------------------------------------------------


def test_score_pairing_with_embeddings(make_pooling, tokenizer):
    client = make_pooling()
    body = client.post("/score", json={"text_1": "apple", "text_2": ["apple", "banana", "cherry"]}).json()
    assert body["object"] == "list" and body["id"].startswith("score-")
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "score"), (1, "score"), (2, "score")]
    assert body["data"][0]["score"] == pytest.approx(1.0, abs=1e-6)
    want = sum(a * b for a, b in zip(_embed(tokenizer, "apple"), _embed(tokenizer, "banana"), strict=True))
    assert body["data"][1]["score"] == pytest.approx(want, abs=1e-5)
    assert len(client.engine.seen) == 3  # each distinct text embedded once
    nn = client.post("/v1/score", json={"text_1": ["apple", "banana"], "text_2": ["banana", "apple"]}).json()
    assert [d["score"] for d in nn["data"]] == pytest.approx([want, want], abs=1e-5)
    one = client.post("/score", json={"text_1": ["apple"], "text_2": "banana"}).json()
    assert len(one["data"]) == 1
    _error(client.post("/score", json={"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}), 400, "text_2")
    _error(client.post("/score", json={"text_1": [], "text_2": "a"}), 400, "text_1")
    _error(client.post("/score", json={"text_1": "a", "text_2": []}), 400, "text_2")


def test_score_cross_encoder(make_pooling, tokenizer):
    client = make_pooling("classify", num_labels=1)
    body = client.post("/score", json={"text_1": "query", "text_2": ["doc one", "doc two"]}).json()
    assert len(body["data"]) == 2 and all(0 < d["score"] < 1 for d in body["data"])
    ids, params = client.engine.seen[-1]
    assert ids == tokenizer("query", "doc two")["input_ids"] and params.task == "classify"
    assert body["usage"]["prompt_tokens"] == sum(len(i) for i, _ in client.engine.seen)
    _error(make_pooling("classify", num_labels=3).post("/score", json={"text_1": "a", "text_2": "b"}), 400,
           "model")


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_rerank_order_and_top_n(make_pooling, path):
    client = make_pooling()
    docs = ["banana", "apple", "cherry pie", "apple"]
    body = client.post(path, json={"query": "apple", "documents": docs}).json()
    assert set(body) == {"id", "model", "usage", "results"} and body["id"].startswith("rerank-")
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4
    assert {r["index"] for r in body["results"][:2]} == {1, 3} and scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(r["document"] == {"text": docs[r["index"]]} for r in body["results"])
    assert body["usage"]["total_tokens"] > 0
    top = client.post(path, json={"query": "apple", "documents": docs, "top_n": 2, "return_documents": False})
    results = top.json()["results"]
    assert len(results) == 2 and all("document" not in r for r in results)
    assert [r["index"] for r in results] == [r["index"] for r in body["results"][:2]]
    _error(client.post(path, json={"query": "a", "documents": []}), 400, "documents")
    _error(client.post(path, json={"query": "a", "documents": ["b"], "top_n": -1}), 400, "top_n")


def test_too_many_inputs(make_pooling):
    client = make_pooling(max_prompts_per_request=2)
    _error(client.post("/score", json={"text_1": "a", "text_2": ["b", "c", "d"]}), 400, "text_2")
    _error(client.post("/rerank", json={"query": "a", "documents": ["b", "c", "d"]}), 400, "documents")
    _error(client.post("/classify", json={"input": ["b", "c", "d"]}), 400, "input")
    _error(client.post("/pooling", json={"input": ["b", "c", "d"]}), 400, "input")


def test_answers_match_the_openapi_document(make_pooling):
    import jsonschema

    embed, classify = make_pooling(), make_pooling("classify", num_labels=1)
    doc = embed.get("/docs/openapi.json").json()
    cases = [(embed, "/v1/embeddings", {"input": ["a", "b"]}, 200),
             (embed, "/v1/embeddings", {"input": "a", "encoding_format": "base64"}, 200),
             (embed, "/pooling", {"input": "a"}, 200), (classify, "/classify", {"input": "a"}, 200),
             (embed, "/score", {"text_1": "a", "text_2": ["b", "c"]}, 200),
             (classify, "/v1/rerank", {"query": "a", "documents": ["b", "c"]}, 200),
             (embed, "/v1/embeddings", {"input": []}, 400)]
    for client, path, body, status in cases:
        resp = client.post(path, json=body)
        assert resp.status_code == status, resp.text
        schema = doc["paths"][path]["post"]["responses"][str(status)]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(resp.json())
