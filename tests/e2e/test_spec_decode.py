"""``heron serve --speculative-config`` (ngram) on a tiny fp32 Llama: the greedy tokens of offline
decoding without speculation, streamed and not, and vLLM's ``spec_decode`` counters on /metrics."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from openai import OpenAI

from heron import LLM, SamplingParams
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.e2e.server_fixture import running_server

pytestmark = pytest.mark.slow

# repetitive prompts (prompt lookup finds them), and the tiny model's own loops
PROMPTS = ["def f(x):\n    return x + 1\n\ndef f(x):\n    return x", "abcabcabcabcabc", "the cat sat on the mat; the"]
TOKENS = 40
SPEC = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[list[int]]]:
    """A tiny checkpoint and its offline greedy tokens without speculation."""
    path = tmp_path_factory.mktemp("spec-e2e") / "llama"
    tiny_checkpoint(tiny_config("llama", max_position_embeddings=256), path)
    save_tiny_tokenizer(path)
    llm = LLM(str(path), dtype="float32", num_kv_blocks=64)
    params = SamplingParams(max_tokens=TOKENS, temperature=0.0, ignore_eos=True)
    reference = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    llm.shutdown()
    return str(path), reference


def test_serve_with_ngram_speculation(request, tiny) -> None:
    path, reference = tiny
    flags = ("--dtype", "float32", "--num-kv-blocks", "64", "--metrics-prefix", "heron,vllm",
             "--speculative-config", json.dumps(SPEC))
    with running_server(request, path, *flags) as server:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", timeout=300)
        extra = {"ignore_eos": True, "return_token_ids": True}
        for prompt, want in zip(PROMPTS, reference, strict=True):
            out = client.completions.create(model=path, prompt=prompt, max_tokens=TOKENS, temperature=0.0,
                                            extra_body=extra)
            assert list(out.choices[0].model_extra["token_ids"]) == want
            assert out.usage.completion_tokens == TOKENS
            stream = client.completions.create(model=path, prompt=prompt, max_tokens=TOKENS, temperature=0.0,
                                               stream=True, extra_body={"ignore_eos": True})
            assert "".join(c.choices[0].text for c in stream if c.choices) == out.choices[0].text
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=30).text

    def counter(name: str) -> float:
        found = re.search(rf"^{name}_total\{{[^}}]*\}} ([0-9.e+]+)$", metrics, re.M)
        assert found, f"{name} missing from /metrics"
        return float(found.group(1))

    drafts = counter("vllm:spec_decode_num_drafts")
    assert drafts > 0 and counter("heron:spec_decode_num_drafts") == drafts
    assert counter("vllm:spec_decode_num_draft_tokens") >= drafts
    assert 0 < counter("vllm:spec_decode_num_accepted_tokens") <= counter("vllm:spec_decode_num_draft_tokens")
    assert re.search(r'^vllm:spec_decode_num_accepted_tokens_per_pos_total\{[^}]*position="0"[^}]*\} [1-9]',
                     metrics, re.M)
