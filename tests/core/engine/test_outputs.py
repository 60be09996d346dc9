"""Engine outputs are deltas; ``max_tokens=0`` reads the prompt only; one reasoning gate per sequence."""

from __future__ import annotations

import re

import pytest

from heron.engine import SamplingParams, StructuredOutputsParams
from tests.core.engine.conftest import run_all

pytestmark = pytest.mark.slow


def test_outputs_hold_only_what_is_new(engine32, prompts):
    tok = engine32.tokenizer
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=2, prompt_logprobs=1)
    engine32.add_request("d1", None, params, prompt_token_ids=prompts[1])
    outs = run_all(engine32)["d1"]
    assert len(outs) == 16 and [o.finished for o in outs] == [False] * 15 + [True]
    for out in outs:
        (comp,) = out.outputs
        assert len(comp.token_ids) == 1 and len(comp.logprobs) == 1  # one new token per decode step
        assert comp.token_ids[0] in comp.logprobs[0]
    assert len(outs[0].prompt_logprobs) == len(prompts[1])
    assert all(o.prompt_logprobs is None for o in outs[1:])  # sent once
    ids = [o.outputs[0].token_ids[0] for o in outs]
    assert "".join(o.outputs[0].text for o in outs) == tok.decode(ids, skip_special_tokens=True)
    total = sum(o.outputs[0].logprobs[0][t].logprob for o, t in zip(outs, ids, strict=True))
    assert outs[-1].outputs[0].cumulative_logprob == pytest.approx(total)
    assert outs[-1].outputs[0].finish_reason == "length"


def test_text_that_may_become_a_stop_string_is_held_back(engine32, prompts):
    free = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    engine32.add_request("free", None, free, prompt_token_ids=prompts[2])
    text = "".join(o.outputs[0].text for o in run_all(engine32)["free"])
    stop = text[10:16]
    engine32.add_request("cut", None, free.clone(stop=[stop]), prompt_token_ids=prompts[2])
    outs = run_all(engine32)["cut"]
    pieces = [o.outputs[0].text for o in outs]
    assert "".join(pieces) == text[: text.index(stop)]
    assert outs[-1].outputs[0].finish_reason == "stop" and outs[-1].outputs[0].stop_reason == stop
    assert all(stop not in "".join(pieces[: i + 1]) for i in range(len(pieces)))


def test_offline_llm_still_returns_cumulative_outputs(engine32, prompts):
    from heron import LLM

    llm = LLM.__new__(LLM)  # the shared engine, without loading the model again
    llm.engine, llm._ids = engine32, iter(range(10**6))
    params = SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=9, ignore_eos=True, logprobs=1, prompt_logprobs=0)
    (out,) = llm.generate([{"prompt_token_ids": prompts[0]}], params, use_tqdm=False)
    assert out.finished and [c.index for c in out.outputs] == [0, 1]
    for comp in out.outputs:
        assert len(comp.token_ids) == 9 and len(comp.logprobs) == 9
        assert comp.text == engine32.tokenizer.decode(comp.token_ids, skip_special_tokens=True)
    assert len(out.prompt_logprobs) == len(prompts[0])


def test_max_tokens_zero_computes_the_prompt_only(engine32, prompts):
    ids = prompts[3]
    engine32.add_request("z0", None, SamplingParams(max_tokens=0, prompt_logprobs=2), prompt_token_ids=ids)
    engine32.add_request("z1", None, SamplingParams(max_tokens=1, prompt_logprobs=2, temperature=0),
                         prompt_token_ids=ids)
    engine32.add_request("zn", None, SamplingParams(n=3, max_tokens=0, prompt_logprobs=0), prompt_token_ids=ids)
    outs = run_all(engine32)
    (zero,) = outs["z0"]
    assert zero.finished and len(zero.outputs) == 1
    assert zero.outputs[0].finish_reason == "length" and zero.outputs[0].token_ids == [] and zero.outputs[0].text == ""
    assert len(zero.prompt_logprobs) == len(ids) and zero.prompt_logprobs[0] is None
    one = outs["z1"][0].prompt_logprobs
    for a, b in zip(zero.prompt_logprobs[1:], one[1:], strict=True):
        assert a.keys() == b.keys()
        assert all(a[t].logprob == pytest.approx(b[t].logprob, abs=1e-5) for t in a)
    (several,) = outs["zn"]
    assert [(c.index, c.finish_reason, c.token_ids) for c in several.outputs] == [(i, "length", []) for i in range(3)]
    assert len(several.prompt_logprobs) == len(ids)
    engine32.blocks.check_no_leaks()


class _RecordingGate:
    """Reasoning "ends" after three output tokens; records every call and the factory's count."""

    made: list[_RecordingGate] = []

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        _RecordingGate.made.append(self)

    def is_reasoning_end(self, token_ids) -> bool:
        self.calls.append(list(token_ids))
        return len(token_ids) >= 3


def test_each_sequence_has_its_own_reasoning_gate(engine32, prompts):
    _RecordingGate.made.clear()
    params = SamplingParams(n=2, temperature=1.0, seed=11, max_tokens=12, reasoning_gate=_RecordingGate,
                            structured_outputs=StructuredOutputsParams(regex="[a-z ]{1,200}"))
    req = engine32.add_request("gates", None, params, prompt_token_ids=prompts[0])
    assert len(_RecordingGate.made) == 2 and req.seqs[0].gate is not req.seqs[1].gate
    run_all(engine32)
    tok = engine32.tokenizer
    for seq, gate in zip(req.seqs, _RecordingGate.made, strict=True):  # made in sample order
        out = seq.output_ids
        assert gate.calls == [out[:1], out[:2], out[:3]]  # its own sequence's prefixes only
        assert re.fullmatch("[a-z ]*", tok.decode(out[3:], skip_special_tokens=True))  # then constrained
    engine32.blocks.check_no_leaks()
