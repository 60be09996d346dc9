"""``use_beam_search`` through ``/v1/completions`` and ``/v1/chat/completions`` on a real engine.

The served beams (``n`` choices, best first) are transformers' ``generate(num_beams=n)`` beams on
the same tiny random Llama (fp32), whole and streamed; bad combinations are 400s.
"""

from __future__ import annotations

import json

import pytest
import torch
from litestar.testing import TestClient

from heron.engine import AsyncEngine, LLMEngine
from heron.server import ServerSettings, build_app
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.core.engine.test_beam_search import EOS, hf_beams

PROMPT = [5, 17, 99, 3, 42, 7]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("beam-served")
    hf = tiny_checkpoint(tiny_config("llama", eos_token_id=EOS, bos_token_id=1), path)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= 3.0  # some beams end early, some run to max_tokens
    hf.save_pretrained(str(path))
    save_tiny_tokenizer(path)
    engine = AsyncEngine(LLMEngine(model=str(path), dtype="float32", num_kv_blocks=128, num_threads=1))
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    with TestClient(build_app(ServerSettings(), engine, chat_template=template),
                    raise_server_exceptions=False) as client:
        yield hf, client
    engine.shutdown()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_completions_beams_equal_transformers(served, length_penalty):
    hf, client = served
    body = {"prompt": PROMPT, "n": 3, "max_tokens": 8, "use_beam_search": True, "length_penalty": length_penalty,
            "return_token_ids": True, "include_stop_str_in_output": True}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    want = hf_beams(hf, PROMPT, 3, length_penalty)
    got = [c["token_ids"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]
    assert got == [tokens for tokens, _ in want]
    assert r.json()["usage"]["completion_tokens"] == sum(len(t) for t in got)
    streamed = client.post("/v1/completions", json={**body, "stream": True})
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    text = {}
    for chunk in chunks:
        for c in chunk["choices"]:
            text[c["index"]] = text.get(c["index"], "") + c["text"]
    assert [text[i] for i in range(3)] == [c["text"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]


def test_chat_beam_search_returns_n_choices(served):
    hf, client = served
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "abc"}], "n": 2,
                                                  "max_tokens": 6, "use_beam_search": True})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1] and choices[0]["message"]["content"] != choices[1]["message"]["content"]


@pytest.mark.parametrize(("body", "words"), [
    ({"response_format": {"type": "json_object"}}, "structured outputs"),
    ({"n": 11}, "max-logprobs"),
])
def test_bad_beam_requests_are_400(served, body, words):
    _, client = served
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "use_beam_search": True, **body})
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]
