"""Speculative decoding (heron.engine.spec): outputs are those of one-token-at-a-time decoding.

A tiny fp32 llama (random weights, whose greedy outputs fall into loops that prompt lookup
catches) runs with and without ``speculative_config``: greedy tokens must be identical, with drafts
accepted, alone and batched with requests that decline speculation, with the prefix cache on,
under preemption, with ``n > 1`` and with stops inside accepted drafts. Random sampling must keep
the target distribution: checked exactly on hand-written logits (chi-square against the known
probabilities) and on the engine with a proposer that drafts the likely path.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from heron.engine import LLMEngine, SamplingParams
from heron.engine.sampler import Sampler
from heron.engine.spec import SpecDecoder, SpeculativeConfig, ngram_lookup, verify_drafts
from heron.structured.params import StructuredOutputsParams
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.core.engine.fakes import make_seq as _fake_seq

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5}
GREEDY = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
PROMPTS = [list(range(10, 40)) * 2, [5, 6, 7, 8] * 6, list(range(100, 130)), [1, 2, 3], [204, 67] * 8]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_checkpoint(tiny_config("llama", max_position_embeddings=512), path)
    save_tiny_tokenizer(path)
    return path


def generate(path: Path, requests: list[tuple[list[int], SamplingParams]], spec: dict | None = None,
             waves: int = 1, **kw) -> tuple[dict, LLMEngine]:
    """Run ``requests`` (``waves`` times, one wave after the other) to the end; return
    ``(wave, request index, sample index) -> CompletionOutput fields joined`` and the engine."""
    kw.setdefault("num_kv_blocks", 128)
    kw.setdefault("num_threads", 1)  # tiny tensors: threads only contend
    engine = LLMEngine(model=str(path), dtype="float32", speculative_config=spec, **kw)
    outs: dict = {}
    for wave in range(waves):
        for i, (prompt, params) in enumerate(requests):
            engine.add_request(f"{wave}-{i}", prompt, params)
        while engine.has_unfinished():
            for out in engine.step():
                w, i = map(int, out.request_id.split("-"))
                for c in out.outputs:
                    got = outs.setdefault((w, i, c.index), {"ids": [], "text": "", "lps": [], "cached": 0})
                    got["ids"] += c.token_ids
                    got["text"] += c.text
                    got["lps"] += c.logprobs or []
                    got["finish"] = (c.finish_reason, c.stop_reason)
                    got["cached"] = out.num_cached_tokens
    engine.blocks.check_no_leaks()
    return outs, engine


def make_seq(prompt: list[int], output: list[int], params: SamplingParams, seed: int | None = None):
    """A sequence of ``prompt`` that has generated ``output`` (its own generator when ``seed``)."""
    seq = _fake_seq(prompt, params=params)
    seq.token_ids += output
    if seed is not None:
        seq.generator = torch.Generator().manual_seed(seed)
    return seq


def spec_stats(engine: LLMEngine) -> dict:
    return {k: v for k, v in engine.stats().items() if k.startswith("spec_decode")}


# -- settings and the proposer ------------------------------------------------------------


def test_vllm_fields_and_defaults():
    c = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3})
    assert (c.method, c.num_speculative_tokens, c.prompt_lookup_min, c.prompt_lookup_max) == ("ngram", 4, 3, 3)
    c = SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 2})
    assert (c.prompt_lookup_min, c.prompt_lookup_max) == (5, 5)
    c = SpeculativeConfig.from_dict({"model": "/drafts/small", "num_speculative_tokens": 3})
    assert (c.method, c.model) == ("draft_model", "/drafts/small")


@pytest.mark.parametrize("spec, message", [
    ({"method": "eagle", "num_speculative_tokens": 3}, "method must be one of"),
    ({"method": "ngram"}, "num_speculative_tokens must be a positive integer"),
    ({"method": "ngram", "num_speculative_tokens": 0}, "num_speculative_tokens"),
    ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4, "prompt_lookup_max": 2},
     "prompt_lookup_min <= prompt_lookup_max"),
    ({"method": "draft_model", "num_speculative_tokens": 2}, "needs 'model'"),
    ({"method": "ngram", "num_speculative_tokens": 2, "acceptance": 1}, "unknown field"),
])
def test_invalid_settings_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        SpeculativeConfig.from_dict(spec)


def test_tensor_parallelism_is_declined_at_start():
    engine = SimpleNamespace(config=SimpleNamespace(tensor_parallel_size=2), pooling=None)
    with pytest.raises(ValueError, match="tensor parallelism"):
        SpecDecoder.build(NGRAM, engine)


def test_ngram_lookup_takes_the_longest_earlier_match():
    tokens = np.array([1, 2, 3, 4, 5, 9, 9, 1, 2, 3])
    assert ngram_lookup(tokens, 4, 2, 5) == [4, 5, 9]  # "1 2 3" matched: at most 3 tokens
    assert ngram_lookup(tokens, 2, 2, 5) == [4, 5]
    assert ngram_lookup(np.array([7, 1, 8, 2, 3, 9, 2, 3]), 3, 2, 4) == [9, 2]  # "2 3" matched, not "3"
    assert ngram_lookup(np.array([5, 6, 7]), 4, 1, 3) == []  # nothing repeats
    assert ngram_lookup(np.array([1, 2, 9, 2]), 4, 2, 3) == []  # only a 1-gram repeats
    # the longer match wins over a more recent shorter one
    assert ngram_lookup(np.array([4, 5, 6, 0, 9, 5, 6, 1, 4, 5, 6]), 1, 2, 3) == [0]



def test_ngram_lookup_drafts_as_far_as_the_match_reaches():
    tokens = np.array([1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5])
    assert ngram_lookup(tokens, 3, 2, 5) == [6, 7, 8]  # a 5-token match: the full k
    assert ngram_lookup(tokens, 8, 2, 5) == [6, 7, 8, 1, 2]  # k and the match's 5 tokens bound it
    assert ngram_lookup(tokens, 8, 2, 3) == [6, 7, 8]  # matched as 3 tokens (prompt_lookup_max)
    # prompt_lookup_min >= k: every match is at least k long, so the proposal is always k (vLLM's way)
    assert ngram_lookup(np.array([1, 2, 3, 4, 5, 9, 9, 1, 2, 3]), 3, 3, 5) == [4, 5, 9]
    # a 2-token match proposes 2 even where 4 could follow
    assert ngram_lookup(np.array([8, 2, 3, 4, 5, 6, 7, 2, 3]), 4, 2, 5) == [4, 5]

# -- greedy: exactly the tokens of decoding one at a time ---------------------------------


def test_greedy_tokens_are_unchanged_and_drafts_are_accepted(tiny):
    reqs = [(p, GREEDY) for p in PROMPTS]
    want, _ = generate(tiny, reqs)
    got, engine = generate(tiny, reqs, NGRAM)
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    assert all(len(v["ids"]) == 48 for v in got.values())
    s = spec_stats(engine)
    assert s["spec_decode_num_drafts"] > 0 and s["spec_decode_num_accepted_tokens"] > 0
    assert s["spec_decode_num_accepted_tokens"] == sum(s["spec_decode_num_accepted_tokens_per_pos"])
    assert s["spec_decode_num_accepted_tokens_per_pos"][0] >= s["spec_decode_num_accepted_tokens_per_pos"][-1]
    # fewer forwards than tokens: the accepted drafts came for free
    assert engine.num_generated_tokens == 48 * len(PROMPTS)


def test_cpu_paged_verifies_drafts_in_its_decode_kernel(tiny, monkeypatch):
    """Chunks of 1 + k tokens run through cpu_paged's C++ kernel like decodes, each query as a decode
    at its position, not through SDPA over a gathered copy of the context (the 0.12x slowdown)."""
    calls: list[int] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))
    reqs = [(p, GREEDY) for p in ([1, 2, 3], [204, 67] * 8, [5, 6, 7, 8] * 3)]  # prompts of <= 16 tokens
    want, _ = generate(tiny, reqs, attention_backend="cpu_paged")
    got, engine = generate(tiny, reqs, NGRAM, attention_backend="cpu_paged")
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    assert spec_stats(engine)["spec_decode_num_accepted_tokens"] > 0
    assert not calls


def test_declining_requests_run_unspeculated_in_the_same_batch(tiny):
    constrained = SamplingParams(temperature=0, max_tokens=20,
                                 structured_outputs=StructuredOutputsParams(regex="[a-z]{1,30}"))
    reqs = [(PROMPTS[0], GREEDY), (PROMPTS[1], SamplingParams(temperature=0, max_tokens=30, logprobs=2)),
            (PROMPTS[4], constrained), (PROMPTS[2], SamplingParams(temperature=0, max_tokens=30, min_tokens=25)),
            (PROMPTS[1], SamplingParams(temperature=0, max_tokens=12, prompt_logprobs=1)),
            (PROMPTS[4], GREEDY)]
    want, _ = generate(tiny, reqs)
    got, engine = generate(tiny, reqs, NGRAM)
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    lps, ref = got[(0, 1, 0)]["lps"], want[(0, 1, 0)]["lps"]  # the batch differs: fp32 rounding only
    assert len(lps) == len(ref) == 30 and [list(d) for d in lps] == [list(d) for d in ref]
    assert all(abs(d[t].logprob - e[t].logprob) < 1e-4 and d[t].rank == e[t].rank
               for d, e in zip(lps, ref, strict=True) for t in d)
    text = got[(0, 2, 0)]["text"]
    assert text == want[(0, 2, 0)]["text"] and text and all("a" <= ch <= "z" for ch in text)
    assert spec_stats(engine)["spec_decode_num_accepted_tokens"] > 0


def test_prefix_cache_only_ever_holds_accepted_tokens(tiny, monkeypatch):
    reqs = [(p, GREEDY) for p in PROMPTS]
    want, _ = generate(tiny, reqs, waves=2)
    committed: list[tuple[int, list[int]]] = []
    commit = __import__("heron.engine.block_manager", fromlist=["BlockManager"]).BlockManager.commit

    def spy(self, seq):
        committed.append((seq.seq_id, list(seq.token_ids[: seq.num_computed_tokens]), seq))
        commit(self, seq)

    monkeypatch.setattr("heron.engine.block_manager.BlockManager.commit", spy)
    got, engine = generate(tiny, reqs, NGRAM, waves=2)
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    assert all(got[(1, i, 0)]["cached"] >= 16 for i in range(len(PROMPTS)) if len(PROMPTS[i]) > 16)
    for _, computed, seq in committed:  # what was marked computed (and hashed) is what the sequence kept
        assert seq.token_ids[: len(computed)] == computed
    assert spec_stats(engine)["spec_decode_num_drafts"] > 0


def test_preemption_with_a_tiny_pool(tiny):
    reqs = [(p, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)) for p in PROMPTS]
    want, _ = generate(tiny, reqs, num_kv_blocks=10)
    got, engine = generate(tiny, reqs, NGRAM, num_kv_blocks=10)
    assert engine.scheduler.num_preemptions > 0
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    assert spec_stats(engine)["spec_decode_num_accepted_tokens"] > 0


def test_a_small_token_budget_falls_back_to_plain_decoding(tiny):
    reqs = [(p, GREEDY) for p in PROMPTS]
    want, _ = generate(tiny, reqs)
    got, engine = generate(tiny, reqs, NGRAM, max_num_batched_tokens=len(PROMPTS) + 1, max_num_seqs=len(PROMPTS))
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}


def test_n_samples(tiny):
    reqs = [(PROMPTS[1], SamplingParams(n=3, temperature=0, max_tokens=30, ignore_eos=True))]
    want, _ = generate(tiny, reqs)
    got, engine = generate(tiny, reqs, NGRAM)
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()} and len(got) == 3
    seeded = [(PROMPTS[4], SamplingParams(n=2, temperature=0.5, seed=7, max_tokens=30, ignore_eos=True))]
    one, e1 = generate(tiny, seeded, NGRAM)
    two, _ = generate(tiny, seeded, NGRAM)
    assert {k: v["ids"] for k, v in one.items()} == {k: v["ids"] for k, v in two.items()}
    assert all(len(v["ids"]) == 30 for v in one.values())


def test_stops_inside_accepted_drafts(tiny):
    plain, _ = generate(tiny, [(PROMPTS[1], GREEDY)])
    ids = plain[(0, 0, 0)]["ids"]
    stop = ids[9]  # a token of the loop: it comes back in an accepted draft
    reqs = [(PROMPTS[1], SamplingParams(temperature=0, max_tokens=48, stop_token_ids=[stop], ignore_eos=True)),
            (PROMPTS[4], SamplingParams(temperature=0, max_tokens=17, ignore_eos=True)),
            (PROMPTS[0], SamplingParams(temperature=0, max_tokens=23, ignore_eos=True))]
    want, _ = generate(tiny, reqs)
    got, engine = generate(tiny, reqs, NGRAM)
    assert {k: (v["ids"], v["finish"]) for k, v in got.items()} == {k: (v["ids"], v["finish"]) for k, v in want.items()}
    assert got[(0, 0, 0)]["finish"] == ("stop", stop) and got[(0, 0, 0)]["ids"][-1] == stop
    assert [len(got[(0, i, 0)]["ids"]) for i in (1, 2)] == [17, 23]
    assert spec_stats(engine)["spec_decode_num_accepted_tokens"] > 0


# -- random sampling keeps the target distribution ----------------------------------------

# chi-square critical values at p = 0.001 by degrees of freedom
_CHI2_001 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88}


def _chi2(counts: collections.Counter, probs: list[float], n: int) -> tuple[float, int]:
    """Pearson's statistic of ``counts`` against ``probs`` (tokens with p = 0 must never be drawn)."""
    stat, df = 0.0, -1
    for t, p in enumerate(probs):
        if p == 0:
            assert counts[t] == 0, f"token {t} has probability 0 but was drawn {counts[t]} times"
            continue
        stat += (counts[t] - n * p) ** 2 / (n * p)
        df += 1
    return stat, df


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of 6 values: threads only contend
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7, top_k=4, top_p=0.9),
    SamplingParams(temperature=1.3, repetition_penalty=1.5, presence_penalty=0.5),
])
def test_rejection_sampling_keeps_the_target_distribution(params, one_thread):
    """The first token of the outcome follows row 0 exactly; after an accepted first draft, the
    second follows row 1 (as processed with the first draft in the output)."""
    vocab, n = 6, 8000
    logits = torch.tensor([[1.0, 0.2, -0.5, 0.8, 0.0, -1.0],
                           [0.1, 1.1, 0.4, -0.3, 0.9, 0.0],
                           [0.0, 0.0, 1.0, 0.5, 0.2, 0.3]])  # [k + 1, vocab], drafts 3 then 1
    drafts = [3, 1]
    seq = make_seq(prompt=[0, 2], output=[4], params=params, seed=1234)
    sampler = Sampler(vocab, eos_token_ids=[], seed=0)
    first, second, n_acc = collections.Counter(), collections.Counter(), 0
    for _ in range(n):
        v = verify_drafts(sampler, seq, drafts, logits)
        assert v.tokens[: v.accepted] == drafts[: v.accepted] and len(v.tokens) == v.accepted + 1
        first[v.tokens[0]] += 1
        if v.accepted >= 1:
            n_acc += 1
            second[v.tokens[1]] += 1
    assert seq.token_ids == [0, 2, 4]  # the sequence itself is untouched
    ref = _reference_probs(sampler, seq, drafts, logits)
    for counts, probs, total in ((first, ref[0], n), (second, ref[1], n_acc)):
        stat, df = _chi2(counts, probs, total)
        assert stat < _CHI2_001[df], (stat, df, counts, probs)
    assert 0.05 * n < n_acc < 0.95 * n  # both outcomes of the first draft happen


def _reference_probs(sampler: Sampler, seq, drafts: list[int], logits: torch.Tensor) -> list[list[float]]:
    """What the sampler itself would draw from at each position (a batch of one row each)."""
    rows = []
    for j in range(len(drafts) + 1):
        at = make_seq(prompt=seq.token_ids[: seq.num_prompt_tokens],
                      output=seq.token_ids[seq.num_prompt_tokens:] + drafts[:j], params=seq.params)
        x = logits[j : j + 1].clone()
        sampler._mask_and_bias(x, [at])
        if at.params.needs_penalties:
            sampler._penalties(x, [at], [0])
        x = x / at.params.temperature
        if at.params.needs_filters:
            x = Sampler._filter(x, [at.params])
        rows.append(torch.softmax(x, dim=-1)[0].tolist())
    return rows


class _PathProposer:
    """Drafts the same likely path every step (so drafts are proposed, accepted and rejected often)."""

    def __init__(self, path: list[int]) -> None:
        self.path = path

    def propose(self, seqs, ks):
        return [self.path[seq.num_output_tokens - 1 : seq.num_output_tokens - 1 + k] for seq, k in zip(seqs, ks, strict=True)]


def test_sampled_outputs_keep_their_distribution_through_the_engine(tiny):
    """Samples of 5 tokens, with and without speculation, bucketed by how far each follows the
    greedy path: a two-sample chi-square test must not tell them apart."""
    prompt, n = PROMPTS[4], 1500
    greedy, _ = generate(tiny, [(prompt, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))])
    path = greedy[(0, 0, 0)]["ids"]
    params = SamplingParams(n=n, temperature=0.2, max_tokens=5, ignore_eos=True)

    def buckets(spec: dict | None, seed: int) -> tuple[collections.Counter, LLMEngine]:
        engine = LLMEngine(model=str(tiny), dtype="float32", speculative_config=spec, num_kv_blocks=1024,
                           max_num_seqs=512, seed=seed, num_threads=1)
        if spec:
            engine.spec.proposer = _PathProposer(path[1:])
        engine.add_request("r", prompt, params)
        ids: dict[int, list[int]] = collections.defaultdict(list)
        while engine.has_unfinished():
            for out in engine.step():
                for c in out.outputs:
                    ids[c.index] += c.token_ids
        follows = collections.Counter()
        for toks in ids.values():
            assert len(toks) == 5
            follows[next((i for i, t in enumerate(toks) if t != path[i]), 5)] += 1
        return follows, engine

    plain, _ = buckets(None, 1)
    spec, engine = buckets({"method": "ngram", "num_speculative_tokens": 3}, 2)
    s = spec_stats(engine)
    assert s["spec_decode_num_drafts"] > n // 2
    assert 0 < s["spec_decode_num_accepted_tokens"] < s["spec_decode_num_draft_tokens"]
    cats = [c for c in range(6) if plain[c] + spec[c] >= 10]  # rare buckets merged into the last one
    a = [plain[c] for c in cats]
    b = [spec[c] for c in cats]
    a[-1] += n - sum(a)
    b[-1] += n - sum(b)
    stat = sum((x - y) ** 2 / (x + y) for x, y in zip(a, b, strict=True) if x + y)  # equal sample sizes
    assert len(cats) >= 3 and stat < _CHI2_001[len(cats) - 1], (plain, spec)
    assert math.isfinite(stat)


# -- metrics ------------------------------------------------------------------------------


def test_metrics_carry_vllms_spec_decode_counters():
    from heron.server.metrics import ServerMetrics

    stats = {"num_running": 0, "spec_decode_num_drafts": 7, "spec_decode_num_draft_tokens": 20,
             "spec_decode_num_accepted_tokens": 9, "spec_decode_num_accepted_tokens_per_pos": [5, 3, 1, 0]}
    text = ServerMetrics("m", lambda: stats, prefixes=("heron", "vllm")).render().decode()
    for prefix, labels in (("vllm", 'engine="0",model_name="m"'), ("heron", 'model_name="m"')):
        assert f"{prefix}:spec_decode_num_drafts_total{{{labels}}} 7.0" in text
        assert f"{prefix}:spec_decode_num_draft_tokens_total{{{labels}}} 20.0" in text
        assert f"{prefix}:spec_decode_num_accepted_tokens_total{{{labels}}} 9.0" in text
        assert f'{prefix}:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="1"}} 3.0' in text
    off = ServerMetrics("m", lambda: {"num_running": 0}, prefixes=("vllm",)).render().decode()
    assert "spec_decode" not in off  # absent, not zero, when the engine does not speculate
    replicas = {**stats, "replicas": [stats, {**stats, "spec_decode_num_accepted_tokens_per_pos": [1]}]}
    both = ServerMetrics("m", lambda: replicas, prefixes=("heron", "vllm")).render().decode()
    assert 'heron:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="0"} 6.0' in both
    assert 'vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 7.0' in both


# -- draft model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_draft(tmp_path_factory) -> Path:
    """A different (1-layer, differently seeded) model of the same vocabulary."""
    path = tmp_path_factory.mktemp("tiny-draft")
    tiny_checkpoint(tiny_config("llama", max_position_embeddings=512, num_hidden_layers=1), path, seed=3)
    save_tiny_tokenizer(path)
    return path


def test_the_target_as_its_own_draft_is_always_right(tiny):
    """With the target as draft every greedy draft is accepted: the draft's KV, kept through the
    target's block tables across steps, is exactly right."""
    reqs = [(p, GREEDY) for p in PROMPTS]
    want, _ = generate(tiny, reqs)
    got, engine = generate(tiny, reqs, {"model": str(tiny), "num_speculative_tokens": 3})
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    s = spec_stats(engine)
    assert s["spec_decode_num_drafts"] > 0
    assert s["spec_decode_num_accepted_tokens"] == s["spec_decode_num_draft_tokens"]


@pytest.mark.parametrize("blocks", [128, 10])
def test_a_draft_model_keeps_greedy_tokens(tiny, other_draft, blocks):
    reqs = [(p, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)) for p in PROMPTS]
    want, _ = generate(tiny, reqs, num_kv_blocks=blocks)
    spec = {"method": "draft_model", "model": str(other_draft), "num_speculative_tokens": 3}
    got, engine = generate(tiny, reqs, spec, num_kv_blocks=blocks, waves=1)
    assert {k: v["ids"] for k, v in got.items()} == {k: v["ids"] for k, v in want.items()}
    assert spec_stats(engine)["spec_decode_num_drafts"] > 0
    assert (engine.scheduler.num_preemptions > 0) == (blocks == 10)


def test_a_draft_model_of_another_vocabulary_is_refused(tiny, tmp_path):
    tiny_checkpoint(tiny_config("llama", vocab_size=300), tmp_path)
    with pytest.raises(ValueError, match="must share the target's tokenizer"):
        LLMEngine(model=str(tiny), dtype="float32", num_kv_blocks=16,
                  speculative_config={"model": str(tmp_path), "num_speculative_tokens": 2})
