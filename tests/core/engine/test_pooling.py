"""The pooling runner: embeddings of a tiny Llama served with ``runner="pooling"`` match transformers'
last hidden states (LAST / MEAN pooling, normalisation, Matryoshka), whatever the batching or
chunking; the runners refuse each other's requests; ``LLM.embed`` / ``score`` / ``classify``; a
bidirectional (non-causal) model reads each prompt whole in one step.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from heron import PoolingParams, SamplingParams
from heron.engine import LLM, LLMEngine, PoolingRequestOutput
from heron.interfaces import CausalLM, PoolingModel
from heron.layers import Attention
from heron.plugins import registry
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.core.engine.conftest import run_all

PROMPTS = [[5, 17, 99, 3, 42, 250, 8], [200, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
           [77, 66, 55], list(range(30, 71))]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama_embed")
    hf = tiny_checkpoint(tiny_config("llama", is_matryoshka=True), path)
    save_tiny_tokenizer(path)
    return str(path), hf


def _engine(path: str, **kwargs) -> LLMEngine:
    kwargs.setdefault("runner", "pooling")
    return LLMEngine(model=path, dtype="float32", num_kv_blocks=64, num_threads=1, **kwargs)


def _hf_hidden(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf.model(input_ids=torch.tensor([ids])).last_hidden_state[0]  # [n, H], final norm applied


def _embed_all(engine: LLMEngine, prompts: list[list[int]], params: PoolingParams | None = None) -> list[torch.Tensor]:
    for i, ids in enumerate(prompts):
        engine.add_request(f"e{i}", None, params, prompt_token_ids=ids)
    outs = run_all(engine)
    engine.blocks.check_no_leaks()
    assert all(len(v) == 1 and isinstance(v[0], PoolingRequestOutput) and v[0].finished for v in outs.values())
    return [outs[f"e{i}"][0].outputs.data for i in range(len(prompts))]


def test_last_pooling_matches_transformers(tiny_llama):
    path, hf = tiny_llama
    engine = _engine(path, pooler_config={"pooling_type": "LAST", "normalize": False})
    assert engine.runner == "pooling"
    got = _embed_all(engine, PROMPTS)
    for ids, emb in zip(PROMPTS, got, strict=True):
        assert emb.shape == (64,)
        assert torch.allclose(emb, _hf_hidden(hf, ids)[-1], atol=1e-4)
    normed = _embed_all(engine, PROMPTS[:2], PoolingParams(normalize=True))
    for ids, emb in zip(PROMPTS[:2], normed, strict=True):
        assert torch.allclose(emb, nn.functional.normalize(_hf_hidden(hf, ids)[-1], dim=-1), atol=1e-5)


@pytest.mark.parametrize("pooling_type", ["MEAN", "LAST", "CLS"])
def test_batched_and_chunked_equal_one_at_a_time(tiny_llama, pooling_type):
    path, hf = tiny_llama
    cfg = {"pooling_type": pooling_type, "normalize": False}
    batched = _embed_all(_engine(path, pooler_config=cfg), PROMPTS)
    chunked_engine = _engine(path, pooler_config=cfg, max_num_batched_tokens=8, max_num_seqs=2)
    chunked = _embed_all(chunked_engine, PROMPTS)
    single_engine = _engine(path, pooler_config=cfg)
    for ids, a, b in zip(PROMPTS, batched, chunked, strict=True):
        alone = _embed_all(single_engine, [ids])[0]
        hidden = _hf_hidden(hf, ids)
        ref = {"MEAN": hidden.mean(0), "LAST": hidden[-1], "CLS": hidden[0]}[pooling_type]
        assert torch.allclose(alone, ref, atol=1e-4)
        assert torch.allclose(a, alone, atol=1e-5) and torch.allclose(b, alone, atol=1e-5)
    # a repeat hits the prefix cache only where every pooled row is computed anyway (LAST)
    again = _embed_all(chunked_engine, PROMPTS[1:2])[0]
    assert torch.allclose(again, chunked[1], atol=1e-5)
    assert (chunked_engine.blocks.prefix_hits > 0) == (pooling_type == "LAST")


def test_dimensions_truncate_then_normalise(tiny_llama, tmp_path):
    path, hf = tiny_llama
    engine = _engine(path, pooler_config={"pooling_type": "LAST"})
    emb = _embed_all(engine, PROMPTS[:1], PoolingParams(dimensions=16))[0]
    ref = nn.functional.normalize(_hf_hidden(hf, PROMPTS[0])[-1][:16], dim=-1)
    assert emb.shape == (16,) and torch.allclose(emb, ref, atol=1e-5)
    with pytest.raises(ValueError, match="at most 64"):
        engine.add_request("big", None, PoolingParams(dimensions=65), prompt_token_ids=[1, 2])
    plain = tmp_path / "plain"
    tiny_checkpoint(tiny_config("llama"), plain)
    save_tiny_tokenizer(plain)
    with pytest.raises(ValueError, match="matryoshka"):
        _engine(str(plain)).add_request("d", None, PoolingParams(dimensions=16), prompt_token_ids=[1, 2])


def test_runners_refuse_each_others_requests(tiny_llama):
    path, _ = tiny_llama
    gen = _engine(path, runner="auto")
    assert gen.runner == "generate"
    with pytest.raises(ValueError, match="--runner pooling"):
        gen.add_request("p", None, PoolingParams(), prompt_token_ids=[1, 2, 3])
    pool = _engine(path)
    with pytest.raises(ValueError, match="--runner generate"):
        pool.add_request("g", None, SamplingParams(max_tokens=2), prompt_token_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="classify"):
        pool.add_request("c", None, PoolingParams(task="classify"), prompt_token_ids=[1, 2, 3])
    assert not pool.has_unfinished() and not pool.requests


def test_llm_embed_and_score_by_cosine(tiny_llama):
    path, hf = tiny_llama
    llm = LLM(path, runner="pooling", dtype="float32", num_kv_blocks=64, num_threads=1)
    tok = llm.get_tokenizer()
    texts = ["hello there", "a quiet lake", "general kenobi"]
    embs = llm.embed(texts, use_tqdm=False)
    for text, out in zip(texts, embs, strict=True):
        ref = nn.functional.normalize(_hf_hidden(hf, tok.encode(text))[-1], dim=-1)
        assert out.outputs.hidden_size == 64
        assert torch.allclose(torch.tensor(out.outputs.embedding), ref, atol=1e-5)
    scores = llm.score("hello there", texts, use_tqdm=False)  # 1-to-N
    vecs = [torch.tensor(e.outputs.embedding) for e in embs]
    for out, v in zip(scores, vecs, strict=True):
        assert out.outputs.score == pytest.approx(float(torch.dot(vecs[0], v)), abs=1e-5)
    pairwise = llm.score(texts, texts[::-1], use_tqdm=False)  # N-to-N
    assert pairwise[1].outputs.score == pytest.approx(1.0, abs=1e-5)
    truncated = llm.embed(["hello there"], truncate_prompt_tokens=3, use_tqdm=False)[0]
    assert truncated.prompt_token_ids == tok.encode("hello there")[-3:]
    llm.engine.blocks.check_no_leaks()


class _FakeEncoder(nn.Module, PoolingModel, CausalLM):
    """A one-layer bidirectional "encoder": hidden = x + attention(x, x, x) over the prompt's own
    tokens (no projections, 4 heads of 16), x the embedding; a mean-pooled linear head.

    (CausalLM too only while the ``models`` registry check accepts nothing else; the engine treats
    any PoolingModel instance as one.)
    """

    is_causal = False
    supported_tasks = ("embed", "classify", "encode")

    def __init__(self, config, ctx) -> None:
        super().__init__()
        self.num_labels = config.num_labels
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.attn = Attention(4, 4, config.hidden_size // 4, 0.25, 0, causal=False)

    def forward(self, input_ids, positions, batch):
        x = self.embed(input_ids)
        return x + self.attn(x, x, x, batch)

    @staticmethod
    def reference(model, ids: list[int]) -> torch.Tensor:
        """The hidden states of one whole prompt, with torch's own bidirectional attention."""
        x = model.embed(torch.tensor(ids))  # [n, H]
        heads = x.view(len(ids), 4, -1).transpose(0, 1)  # [4, n, 16]
        out = nn.functional.scaled_dot_product_attention(heads, heads, heads, scale=0.25)
        return x + out.transpose(0, 1).reshape(len(ids), -1)

    def load_weights(self, weights) -> None:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0, 0.5)

    def classify(self, hidden):
        return self.head(hidden.mean(0)).float()

    def compute_logits(self, hidden_states):
        raise AssertionError("a pooling model is never asked for logits")


@pytest.fixture
def fake_classifier(tiny_llama, tmp_path):
    def make(num_labels: int) -> str:
        path, _ = tiny_llama
        folder = tmp_path / f"fake{num_labels}"
        folder.mkdir()
        for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            src = f"{path}/{name}"
            try:
                (folder / name).write_bytes(open(src, "rb").read())
            except FileNotFoundError:
                pass
        cfg = json.loads(open(f"{path}/config.json").read())
        cfg.update(architectures=["HeronFakeForSequenceClassification"],
                   num_labels=num_labels, id2label={str(i): f"L{i}" for i in range(num_labels)},
                   label2id={f"L{i}": i for i in range(num_labels)})
        (folder / "config.json").write_text(json.dumps(cfg))
        return str(folder)

    undo = registry("models").register("HeronFakeForSequenceClassification", _FakeEncoder)
    yield make
    undo()


def test_classify_and_cross_encoder_score(fake_classifier):
    llm = LLM(fake_classifier(3), dtype="float32", num_kv_blocks=64, num_threads=1)
    assert llm.engine.runner == "pooling" and llm.engine.pooling.default_task == "classify"
    model, tok = llm.engine.model, llm.get_tokenizer()
    outs = llm.classify(["one", "two words"], use_tqdm=False)
    for text, out in zip(["one", "two words"], outs, strict=True):
        logits = model.classify(_FakeEncoder.reference(model, tok.encode(text)))
        assert out.outputs.num_classes == 3
        assert torch.allclose(torch.tensor(out.outputs.probs), torch.softmax(logits, -1), atol=1e-5)
    with pytest.raises(ValueError, match="one label"):
        llm.score("a", "b", use_tqdm=False)
    cross = LLM(fake_classifier(1), dtype="float32", num_kv_blocks=64, num_threads=1)
    model, tok = cross.engine.model, cross.get_tokenizer()
    got = cross.score("query", ["doc one", "doc two"], use_tqdm=False)
    for doc, out in zip(["doc one", "doc two"], got, strict=True):
        logit = model.classify(_FakeEncoder.reference(model, tok("query", doc)["input_ids"]))
        assert out.outputs.score == pytest.approx(torch.sigmoid(logit).item(), abs=1e-5)
    cross.engine.blocks.check_no_leaks()


def test_non_causal_prompt_is_read_whole(fake_classifier):
    engine = LLMEngine(model=fake_classifier(2), dtype="float32", num_kv_blocks=64, num_threads=1,
                       max_num_batched_tokens=8)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        engine.add_request("long", None, PoolingParams(), prompt_token_ids=list(range(9)))
    for i in range(3):
        engine.add_request(f"r{i}", None, PoolingParams(task="classify"), prompt_token_ids=[i + 1] * 6)
    steps = []
    while engine.has_unfinished():
        steps.append([out.request_id for out in engine.step()])
    assert steps == [["r0"], ["r1"], ["r2"]]  # 6 + 6 > 8 tokens: one whole prompt per step, never a chunk
    assert engine.blocks.prefix_hits == 0
    engine.blocks.check_no_leaks()
