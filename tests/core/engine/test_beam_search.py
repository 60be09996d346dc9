"""Beam search against transformers' ``generate(num_beams=k, do_sample=False)`` on the same weights.

A tiny random Llama in fp32 whose EOS row of the LM head is scaled up, so that EOS is likely in
some contexts and not in others: beams end at different lengths (and the search stops early),
which is where length penalties and transformers' finishing rules matter. Three prompts, beam
widths 2 and 4, length penalties 1.0, 0.5 and 2.0, with EOS stopping the beams and with
``ignore_eos``: the returned beams (token ids, best first) must be transformers' sequences and
their scores its ``sequences_scores`` (within 1e-4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch

from heron.engine import LLM, AsyncEngine, TokenIdError
from heron.engine.beam_search import BeamSearchParams, beam_search
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

PROMPTS = [[5, 17, 99, 3], [200, 1, 42], [7, 7, 8, 9, 10, 11]]
MAX_TOKENS = 8
EOS = 0  # the tiny tokenizer's EOS; the config says the same, so both stop on {0}
PAD = 255


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, LLM]]:
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("beam")
    hf = tiny_checkpoint(tiny_config("llama", eos_token_id=EOS, bos_token_id=1), path)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= 3.0  # EOS very likely after some tokens, unlikely after others
    hf.save_pretrained(str(path))
    save_tiny_tokenizer(path)
    llm = LLM(str(path), dtype="float32", num_threads=1)  # tiny: one thread is fastest, and robust to a busy CPU
    assert llm.engine.eos_token_ids == [EOS]
    yield hf, llm
    torch.set_num_threads(threads)


def hf_beams(hf: object, prompt: list[int], width: int, length_penalty: float, *, ignore_eos: bool = False,
             early_stopping: bool | str = False) -> list[tuple[list[int], float]]:
    """transformers' returned beams: (new token ids, EOS included; sequences_scores), best first."""
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            num_beams=width, num_return_sequences=width, do_sample=False, length_penalty=length_penalty,
            early_stopping=early_stopping, max_new_tokens=MAX_TOKENS, eos_token_id=None if ignore_eos else [EOS],
            pad_token_id=PAD, output_scores=True, return_dict_in_generate=True,
        )
    lengths = (out.beam_indices != -1).sum(dim=1).tolist()  # each beam's generated length (rows are padded)
    return [(out.sequences[i, len(prompt): len(prompt) + n].tolist(), float(out.sequences_scores[i]))
            for i, n in enumerate(lengths)]


def assert_same_beams(hf: object, llm: LLM, params: BeamSearchParams) -> list[list[str]]:
    """Beam-search all prompts in one call; compare each with transformers; return the finish reasons."""
    outputs = llm.beam_search([{"prompt_token_ids": p} for p in PROMPTS], params)
    reasons = []
    for prompt, out in zip(PROMPTS, outputs, strict=True):
        want = hf_beams(hf, prompt, params.beam_width, params.length_penalty, ignore_eos=params.ignore_eos,
                        early_stopping=params.early_stopping)
        seqs = out.sequences
        assert all(s.tokens[: len(prompt)] == prompt for s in seqs)
        assert [s.tokens[len(prompt):] for s in seqs] == [ids for ids, _ in want], params
        diff = max(abs(s.score - score) for s, (_, score) in zip(seqs, want, strict=True))
        assert diff < 1e-4, (params, diff)
        for s in seqs:  # the score is the summed logprob over the generated length (EOS included)
            assert s.score == pytest.approx(s.cum_logprob / (len(s.tokens) - len(prompt)) ** params.length_penalty)
        reasons.append([s.finish_reason for s in seqs])
    return reasons


@pytest.mark.parametrize("ignore_eos", [False, True], ids=["eos", "ignore_eos"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("width", [2, 4])
def test_beams_equal_transformers(tiny, width: int, length_penalty: float, ignore_eos: bool) -> None:
    hf, llm = tiny
    params = BeamSearchParams(beam_width=width, max_tokens=MAX_TOKENS, length_penalty=length_penalty,
                              ignore_eos=ignore_eos)
    reasons = assert_same_beams(hf, llm, params)
    if ignore_eos:
        assert all(r == "length" for rs in reasons for r in rs)


def test_eos_ends_beams_and_ignore_eos_runs_through(tiny) -> None:
    """The cases above are meaningful: EOS ends some beams early, and ignore_eos runs through EOS tokens."""
    hf, llm = tiny
    reasons = assert_same_beams(hf, llm, BeamSearchParams(beam_width=2, max_tokens=MAX_TOKENS))
    flat = [r for rs in reasons for r in rs]
    assert "stop" in flat and "length" in flat
    out = llm.beam_search(PROMPTS, BeamSearchParams(beam_width=2, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert any(EOS in s.tokens[len(p):] for p, o in zip(PROMPTS, out, strict=True) for s in o.sequences)


@pytest.mark.parametrize("early_stopping", [True, "never"])
def test_early_stopping_modes_equal_transformers(tiny, early_stopping: bool | str) -> None:
    hf, llm = tiny
    for width, length_penalty in ((2, 1.0), (4, 0.5)):
        assert_same_beams(hf, llm, BeamSearchParams(beam_width=width, max_tokens=MAX_TOKENS,
                                                     length_penalty=length_penalty, early_stopping=early_stopping))


def test_one_forward_per_step_for_all_beams(tiny) -> None:
    """All live beams of all prompts share each step's forward (not one forward per beam)."""
    _, llm = tiny
    runner = llm.engine.model_runner
    calls = []
    execute = runner.execute

    def counting(sched, *args):
        calls.append(len(sched.scheduled))
        return execute(sched, *args)

    params = BeamSearchParams(beam_width=4, max_tokens=MAX_TOKENS, ignore_eos=True)
    runner.execute = counting
    try:
        together = llm.beam_search(PROMPTS, params)
    finally:
        del runner.execute
    assert len(calls) == MAX_TOKENS
    assert calls[0] == len(PROMPTS) and max(calls) == 4 * len(PROMPTS)
    one_by_one = llm.beam_search(PROMPTS, params, concurrency_limit=1)
    assert [[s.tokens for s in o.sequences] for o in one_by_one] == [[s.tokens for s in o.sequences] for o in together]


def test_served_beam_search_over_async_engine(tiny) -> None:
    """The async driver gives the same beams, in the served shape (EOS out of the token ids by default)."""
    _, llm = tiny
    params = BeamSearchParams(beam_width=2, max_tokens=MAX_TOKENS)
    offline = llm.beam_search(PROMPTS, params)
    keep_eos = BeamSearchParams(beam_width=2, max_tokens=MAX_TOKENS, include_stop_str_in_output=True)
    engine = AsyncEngine(llm.engine)

    async def run() -> list:
        jobs = [beam_search(engine, p, params, f"r{i}") for i, p in enumerate(PROMPTS)]
        jobs.append(beam_search(engine, PROMPTS[1], keep_eos, "keep"))
        results = await asyncio.gather(*jobs)
        with pytest.raises(TokenIdError):  # the engine's own error, as the routes map it (no ExceptionGroup)
            await beam_search(engine, [5, 999], params, "bad")
        return results

    try:
        *served, kept = asyncio.run(run())
    finally:
        engine.shutdown()
    tok = llm.get_tokenizer()
    for prompt, off, out in zip(PROMPTS, offline, served, strict=True):
        assert out.finished and out.prompt_token_ids == prompt
        assert [c.index for c in out.outputs] == list(range(2))
        assert out.extra["beam_scores"] == pytest.approx([s.score for s in off.sequences])
        for comp, seq in zip(out.outputs, off.sequences, strict=True):
            full = seq.tokens[len(prompt):]
            assert comp.finish_reason == seq.finish_reason
            assert comp.cumulative_logprob == pytest.approx(seq.cum_logprob)
            if comp.finish_reason == "stop":
                assert full[-1] == EOS and comp.token_ids == full[:-1] and comp.stop_reason == EOS
            else:
                assert comp.token_ids == full and comp.stop_reason is None
            assert comp.text == tok.decode(comp.token_ids, skip_special_tokens=True)
            assert len(comp.logprobs) == len(comp.token_ids)
            assert all(t in lp for t, lp in zip(comp.token_ids, comp.logprobs, strict=True))
    stops = [c for c in kept.outputs if c.finish_reason == "stop"]
    assert stops and all(c.token_ids[-1] == EOS for c in stops)


def test_limits_and_validation(tiny) -> None:
    _, llm = tiny
    with pytest.raises(ValueError, match="beam_width"):
        BeamSearchParams(beam_width=0, max_tokens=4)
    with pytest.raises(ValueError, match="max_tokens"):
        BeamSearchParams(beam_width=2, max_tokens=0)
    with pytest.raises(ValueError, match="early_stopping"):
        BeamSearchParams(beam_width=2, max_tokens=4, early_stopping="sometimes")
    with pytest.raises(ValueError, match="max_logprobs"):  # 2 * 11 candidates per beam > 20
        llm.beam_search(PROMPTS, BeamSearchParams(beam_width=11, max_tokens=4))
    with pytest.raises(ValueError, match="no room"):
        llm.beam_search([[5] * llm.engine.max_model_len], BeamSearchParams(beam_width=2, max_tokens=4))
    assert not llm.engine.has_unfinished()
    # max_tokens is clamped to the room the prompt leaves (as heron clamps max_tokens)
    long = [5] * (llm.engine.max_model_len - 3)
    out = llm.beam_search([long], BeamSearchParams(beam_width=2, max_tokens=50, ignore_eos=True))
    assert all(len(s.tokens) == llm.engine.max_model_len for s in out[0].sequences)
    # text decodes the prompt and the beam, as vLLM's offline beam search does
    seq = llm.beam_search(["hi"], BeamSearchParams(beam_width=2, max_tokens=3, ignore_eos=True))[0].sequences[0]
    assert seq.text == llm.get_tokenizer().decode(seq.tokens) and seq.text.startswith("hi")
