"""Every sampling parameter against a reference computed straight from its definition.

Logits are written by hand in fp32; heron's :class:`~heron.engine.sampler.Sampler` runs on real
:class:`~heron.engine.request.Sequence` objects. The reference is plain Python over lists,
following vLLM's semantics and order: logit bias, ``allowed_token_ids``, ``bad_words`` (the last
token of a word whose other tokens end the *output*), ``min_tokens`` (EOS and ``stop_token_ids``
banned until reached), then the repetition penalty (tokens of prompt + output: positive logits
divided, negative ones multiplied), frequency/presence penalties (output tokens); then
temperature, ``min_p`` (keep p >= min_p * p_max), ``top_k``, and ``top_p`` on what is left.

Deterministic rules are checked on the greedy token (each case is built so that the parameter
changes it) and random ones on the distribution: thousands of rows of one batch, drawn from a
seeded sampler, must match the reference probabilities token by token (tokens the reference
removes are never drawn), and must NOT match the distribution without the parameter.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from heron.engine.request import Sequence
from heron.engine.sampler import Sampler
from heron.engine.sampling_params import SamplingParams
from tests.core.engine.fakes import make_seq

V = 24  # vocabulary size
# distinct values of both signs (7 is coprime with 24): -3.0 ... 2.75 in steps of 0.25, one 0.0
RAW = [((7 * i) % V - V / 2) / 4 for i in range(V)]
TOP = max(range(V), key=RAW.__getitem__)  # 17 (2.75): the most likely raw token
EOS = 10  # the second most likely (2.5)
N = 6000  # rows per empirical distribution
NEG = float("-inf")


# -- the reference ------------------------------------------------------------------------


def ref_logits(p: SamplingParams, prompt: list[int], output: list[int], bad: list[list[int]] = ()) -> list[float]:
    """The processed logits, one definition after the other."""
    x = list(RAW)
    for t, b in (p.logit_bias or {}).items():
        x[t] += b
    if p.allowed_token_ids is not None:
        x = [v if t in p.allowed_token_ids else NEG for t, v in enumerate(x)]
    for word in bad:
        prefix = word[:-1]
        if not prefix or output[len(output) - len(prefix):] == prefix:
            x[word[-1]] = NEG
    if len(output) < p.min_tokens:
        for t in [*p.stop_token_ids, *([] if p.ignore_eos else [EOS])]:
            x[t] = NEG
    for t in set(prompt) | set(output):
        x[t] = x[t] / p.repetition_penalty if x[t] > 0 else x[t] * p.repetition_penalty
    for t, count in Counter(output).items():
        x[t] -= p.frequency_penalty * count + p.presence_penalty
    return x


def ref_probs(x: list[float], p: SamplingParams) -> list[float]:
    """The distribution a random row samples from: temperature, min_p, top_k, top_p."""
    z = [v / p.temperature for v in x]
    probs = _softmax(z, set(range(V)))
    keep = {t for t in range(V) if probs[t] > 0}
    if p.min_p > 0:
        keep = {t for t in keep if probs[t] >= p.min_p * max(probs)}
    if p.top_k > 0:
        keep = set(sorted(keep, key=lambda t: -z[t])[: p.top_k])
    if p.top_p < 1:
        probs, before, kept = _softmax(z, keep), 0.0, set()
        for t in sorted(keep, key=lambda t: -z[t]):
            if before < p.top_p:  # the mass above it is not yet top_p: it is still needed
                kept.add(t)
            before += probs[t]
        keep = kept
    return _softmax(z, keep)


def _softmax(z: list[float], keep: set[int]) -> list[float]:
    m = max(z[t] for t in keep)
    e = [math.exp(z[t] - m) if t in keep and z[t] > NEG else 0.0 for t in range(V)]
    return [v / sum(e) for v in e]


def _argmax(x: list[float]) -> int:
    return max(range(V), key=x.__getitem__)


# -- running heron's sampler -----------------------------------------------------------------


def seq(p: SamplingParams, prompt: list[int], output: list[int] = (), bad: list[list[int]] = ()) -> Sequence:
    s = make_seq(prompt, params=p)
    s.token_ids.extend(output)  # prompt + output; the prompt length stays as built
    p._bad_words_ids = [list(w) for w in bad]  # what the engine fills from ``bad_words``
    return s


def sample(seqs: list[Sequence], seed: int = 0):
    """One step of a fresh seeded sampler; every row's logits are RAW (fp32)."""
    return Sampler(V, [EOS], seed=seed)(torch.tensor([RAW] * len(seqs), dtype=torch.float32), seqs)


def frequencies(s: Sequence, n: int = N, seed: int = 0) -> list[float]:
    counts = Counter(sample([s] * n, seed).token_ids)
    return [counts[t] / n for t in range(V)]


def mismatches(freq: list[float], probs: list[float], n: int = N) -> list[str]:
    """Tokens whose frequency is off (5 standard deviations), or drawn though impossible."""
    bad = []
    for t, (f, q) in enumerate(zip(freq, probs, strict=True)):
        if (q == 0 and f > 0) or abs(f - q) > 5 * math.sqrt(q * (1 - q) / n) + 1e-3:
            bad.append(f"token {t}: drawn {f:.4f}, reference {q:.4f}")
    return bad


def check_distribution(p: SamplingParams, prompt: list[int], output: list[int] = (), bad=(), *, without: dict):
    """Heron's draws match the reference, and do not match the reference without the parameter.

    ``without`` names the parameter's neutral value (``{"bad_words": None}`` drops ``bad``).
    """
    freq = frequencies(seq(p, prompt, output, bad))
    assert mismatches(freq, ref_probs(ref_logits(p, prompt, output, bad), p)) == []
    plain = p.clone(**without)
    plain_bad = () if "bad_words" in without else bad
    assert mismatches(freq, ref_probs(ref_logits(plain, prompt, output, plain_bad), plain)), \
        f"the draws cannot tell {p} from {without}: the case does not test the parameter"


def check_greedy(p: SamplingParams, prompt: list[int], output: list[int] = (), bad=()):
    """The greedy token is the reference's argmax, and differs from the raw argmax."""
    want = _argmax(ref_logits(p, prompt, output, bad))
    assert want != TOP, "the case must change the greedy token to test anything"
    assert sample([seq(p, prompt, output, bad)]).token_ids == [want]


# -- deterministic processing ---------------------------------------------------------------

PROMPT = [TOP, 0, 7]  # the top token (2.75) and two negative-logit ones
OUTPUT = [3, 9, 3, 3, 4]  # 3 (2.25) three times, 9 (0.75) and 4 (-2.0) once


@pytest.mark.parametrize("rep", [0.6, 1.8])
def test_repetition_penalty_scales_prompt_and_output_tokens(rep):
    greedy = SamplingParams(temperature=0, repetition_penalty=3.0)
    check_greedy(greedy, PROMPT, OUTPUT)  # 2.75 / 3 falls below the next tokens
    check_distribution(SamplingParams(repetition_penalty=rep), PROMPT, OUTPUT, without={"repetition_penalty": 1.0})


@pytest.mark.parametrize(("presence", "frequency"), [(1.5, 0.0), (0.0, 0.9), (-0.7, 0.6)])
def test_presence_and_frequency_penalties_count_output_tokens_only(presence, frequency):
    check_greedy(SamplingParams(temperature=0, presence_penalty=2.0), [0], [TOP])
    p = SamplingParams(presence_penalty=presence, frequency_penalty=frequency)
    check_distribution(p, PROMPT, OUTPUT, without={"presence_penalty": 0.0, "frequency_penalty": 0.0})


def test_logit_bias_adds_to_the_logits():
    bias = {3: 4.0, TOP: -2.5, 20: 1.25}
    check_greedy(SamplingParams(temperature=0, logit_bias=bias), [1])
    check_distribution(SamplingParams(logit_bias=bias), [1], without={"logit_bias": None})


def test_allowed_token_ids_mask_every_other_token():
    allowed = [0, 3, 8, 16]
    check_greedy(SamplingParams(temperature=0, allowed_token_ids=allowed), [1])
    check_distribution(SamplingParams(allowed_token_ids=allowed, logit_bias={0: 2.0}), [1],
                       without={"allowed_token_ids": None})


def test_bad_words_ban_the_next_token_of_a_started_word():
    # one-token words are always banned; the output ends with 9 and with 6, 9, not with 4
    ban = [[TOP], [9, 12], [6, 9, 13], [4, 14], [21, 22]]
    out = [3, 4, 6, 9]
    x = ref_logits(SamplingParams(), [1], out, ban)
    assert [t for t in range(V) if x[t] == NEG] == [12, 13, TOP]
    check_greedy(SamplingParams(temperature=0), [1], out, ban)
    check_distribution(SamplingParams(), [1], out, ban, without={"bad_words": None})


def test_bad_words_look_at_the_output_not_the_prompt():
    # the prompt ends with 9, but nothing was generated yet: [9, 12] has not been started
    x = ref_logits(SamplingParams(), [1, 9], [], [[9, 12]])
    assert x[12] > NEG
    token = sample([seq(SamplingParams(temperature=0, logit_bias={12: 10.0}), [1, 9], [], [[9, 12]])]).token_ids
    assert token == [12]


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_min_tokens_bans_eos_and_stop_token_ids_until_reached(ignore_eos):
    p = SamplingParams(min_tokens=3, stop_token_ids=[20, 21], ignore_eos=ignore_eos, logit_bias={20: 9.0})
    for output in ([], [1], [1, 2], [1, 2, 3]):
        x = ref_logits(p, [0], output)
        assert (x[20] == NEG) == (len(output) < 3) and (x[EOS] == NEG) == (len(output) < 3 and not ignore_eos)
        freq = frequencies(seq(p, [0], output), n=2000)
        assert mismatches(freq, ref_probs(x, p), n=2000) == [], output
    greedy = p.clone(temperature=0, logit_bias={20: 9.0, 21: 14.0})
    assert sample([seq(greedy, [0], [1, 2])]).token_ids == [_argmax(ref_logits(greedy, [0], [1, 2]))]
    assert sample([seq(greedy, [0], [1, 2, 3])]).token_ids == [21]  # allowed once min_tokens is reached


# -- temperature and the random filters -------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_before_softmax(temperature):
    check_distribution(SamplingParams(temperature=temperature), [0], without={"temperature": 1.0})
    assert sample([seq(SamplingParams(temperature=0), [0])]).token_ids == [TOP]


@pytest.mark.parametrize(("name", "value", "off"), [
    ("top_k", 4, 0), ("top_k", 1, 0), ("top_p", 0.5, 1.0), ("top_p", 0.9, 1.0), ("min_p", 0.1, 0.0), ("min_p", 0.35, 0.0),
])
def test_filters_keep_exactly_the_reference_set(name, value, off):
    p = SamplingParams(temperature=0.8, **{name: value})
    probs = ref_probs(ref_logits(p, [0], []), p)
    kept = {t for t in range(V) if probs[t] > 0}
    assert 1 <= len(kept) < V
    freq = frequencies(seq(p, [0]))
    assert {t for t in range(V) if freq[t] > 0} == kept  # every kept token is likely enough to show
    check_distribution(p, [0], without={name: off})


def test_filters_combine_in_vllm_order():
    # min_p first (on the full distribution), then top_k, then top_p on what is left
    p = SamplingParams(temperature=0.7, min_p=0.2, top_k=8, top_p=0.8, repetition_penalty=1.3, logit_bias={3: 1.0})
    probs = ref_probs(ref_logits(p, [TOP, 2], [3]), p)
    assert [t for t in range(V) if probs[t] > 0] == [3, 10, 17, 20]
    check_distribution(p, [TOP, 2], [3], without={"min_p": 0.0, "top_k": 0})


def test_rows_of_one_batch_do_not_disturb_each_other():
    cases = [SamplingParams(repetition_penalty=2.0), SamplingParams(logit_bias={1: 3.0}, top_k=3),
             SamplingParams(temperature=0), SamplingParams(allowed_token_ids=[2, 4, 6], min_p=0.2)]
    seqs = [seq(p, [TOP, 8], [8, 9]) for p in cases]
    tokens = sample(seqs * N).token_ids
    for j, p in enumerate(cases):
        counts = Counter(tokens[j::len(cases)])
        freq = [counts[t] / N for t in range(V)]
        probs = ref_probs(ref_logits(p, [TOP, 8], [8, 9]), p) if not p.greedy else \
            [float(t == _argmax(ref_logits(p, [TOP, 8], [8, 9]))) for t in range(V)]
        assert mismatches(freq, probs) == [], p


# -- seeds and logprobs -----------------------------------------------------------------------


def test_a_seeded_sequence_draws_the_same_tokens_whatever_the_batch():
    def draws(position: int, others: int, sampler_seed: int) -> list[int]:
        s = seq(SamplingParams(temperature=1.5), [0])
        s.generator = torch.Generator().manual_seed(1234)  # what the engine gives a seeded request
        out = []
        for _ in range(20):
            batch = [seq(SamplingParams(temperature=1.5), [0]) for _ in range(others)]
            batch.insert(position, s)
            out.append(sample(batch, sampler_seed).token_ids[position])
        return out

    alone = draws(0, 0, 0)
    assert draws(2, 4, 99) == alone and draws(1, 1, 7) == alone
    assert len(set(alone)) > 3
    s = seq(SamplingParams(temperature=1.5), [0])
    s.generator = torch.Generator().manual_seed(4321)
    assert [sample([s]).token_ids[0] for _ in range(20)] != alone  # another seed, other draws


def test_seeded_draws_follow_the_distribution_and_the_sampler_seed_repeats():
    p = SamplingParams(temperature=0.9, top_k=6)
    seqs = []
    for i in range(3000):
        s = seq(p, [0])
        s.generator = torch.Generator().manual_seed(i)
        seqs.append(s)
    counts = Counter(sample(seqs).token_ids)
    assert mismatches([counts[t] / 3000 for t in range(V)], ref_probs(ref_logits(p, [0], []), p), n=3000) == []
    plain = [seq(p, [0]) for _ in range(50)]
    assert sample(plain, seed=3).token_ids == sample(plain, seed=3).token_ids
    assert sample(plain, seed=3).token_ids != sample(plain, seed=4).token_ids


def test_logprobs_are_the_raw_log_softmax_whatever_the_processing():
    raw_lp = torch.log_softmax(torch.tensor(RAW, dtype=torch.float64), dim=-1).tolist()
    ranks = {t: 1 + sum(v > raw_lp[t] for v in raw_lp) for t in range(V)}
    params = [SamplingParams(temperature=0, logprobs=3, logit_bias={1: 8.0}, repetition_penalty=1.5),
              SamplingParams(logprobs=0, allowed_token_ids=[2, 3]), SamplingParams(), SamplingParams(logprobs=6)]
    out = sample([seq(p, [TOP, 4], [4]) for p in params])
    assert out.token_ids[0] == 1 and out.token_ids[1] in (2, 3)
    assert out.logprobs[2] is None and out.sampled_logprobs[2] is None
    top = sorted(range(V), key=lambda t: -raw_lp[t])
    for row, k in ((0, 3), (1, 0), (3, 6)):
        got, chosen = out.logprobs[row], out.token_ids[row]
        assert set(got) == {chosen, *top[:k]}
        for t, lp in got.items():
            assert lp.logprob == pytest.approx(raw_lp[t], abs=1e-5) and lp.rank == ranks[t]
        assert out.sampled_logprobs[row] == pytest.approx(raw_lp[chosen], abs=1e-5)
