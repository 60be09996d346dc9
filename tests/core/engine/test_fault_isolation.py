"""A failure in one request's row ends that request alone; the batch goes on unchanged."""

from __future__ import annotations

import pytest

from heron.engine import SamplingParams, StructuredOutputsParams
from tests.core.engine.conftest import run_all

pytestmark = pytest.mark.slow


class _ExplodingDetokenizer:
    """Wraps a request's detokenizer; ``process`` raises on its third output."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def process(self, out):
        self.calls += 1
        if self.calls == 3:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "injected")
        return self.inner.process(out)


class _ExplodingGate:
    def is_reasoning_end(self, token_ids) -> bool:
        if len(token_ids) == 2:
            raise KeyError("injected gate failure")
        return False


def _inject(engine, where: str) -> None:
    """Add request "bad" and arrange for its row to fail at ``where``."""
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    if where == "gate":
        params = params.clone(structured_outputs=StructuredOutputsParams(regex="[a-z]{1,30}"),
                              reasoning_gate=_ExplodingGate)
    req = engine.add_request("bad", None, params, prompt_token_ids=[1, 2, 3, 4, 5, 6, 7])
    if where == "sampler":  # an id that slipped past admission: the sampler's mask indexing raises
        req.params.allowed_token_ids = [10**9]
    elif where == "detokenizer":
        req.detok = _ExplodingDetokenizer(req.detok)


def _tokens(outs) -> list[int]:
    return [t for out in outs for comp in out.outputs for t in comp.token_ids]


@pytest.mark.parametrize("where", ["sampler", "detokenizer", "gate"])
def test_a_failing_request_ends_alone_and_the_others_are_unchanged(engine32, prompts, where):
    engine = engine32
    good = {f"good{i}": SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2 if i == 1 else None)
            for i in range(3)}

    def add_good(tag: str) -> None:
        for i, (rid, params) in enumerate(good.items()):
            engine.add_request(f"{tag}{rid}", None, params, prompt_token_ids=prompts[i])

    add_good("ref-")
    reference = run_all(engine)
    add_good("")
    outputs: dict = {}
    for out in engine.step():  # the batch is running when the failing request joins
        outputs.setdefault(out.request_id, []).append(out)
    _inject(engine, where)
    run_all(engine, outputs)

    bad = outputs["bad"]
    assert bad[-1].finished and bad[-1].error is not None
    assert bad[-1].outputs[-1].finish_reason == "error"
    assert sum(o.error is not None for o in bad) == 1  # reported once, on its last output
    for rid in good:
        assert _tokens(outputs[rid]) == _tokens(reference[f"ref-{rid}"])
        assert len(_tokens(outputs[rid])) == 12 and outputs[rid][-1].outputs[-1].finish_reason == "length"
    assert "bad" not in engine.requests and not engine.has_unfinished()
    engine.blocks.check_no_leaks()
    again = run_all_after(engine, prompts[3])
    assert len(again) == 5


def run_all_after(engine, prompt: list[int]) -> list[int]:
    engine.add_request("after", None, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True),
                       prompt_token_ids=prompt)
    out = run_all(engine)["after"]
    engine.blocks.check_no_leaks()
    return _tokens(out)


def test_a_failing_finished_hook_does_not_change_the_outcome(engine32, prompts, monkeypatch):
    import heron.engine.engine as engine_module

    def broken_hook(name, **kwargs):
        raise RuntimeError("a hook plugin failed")

    monkeypatch.setattr(engine_module, "call_hook", broken_hook)
    engine32.add_request("hooked", None, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True),
                         prompt_token_ids=prompts[0])
    outs = run_all(engine32)["hooked"]
    assert outs[-1].finished and outs[-1].error is None and len(_tokens(outs)) == 4
    engine32.blocks.check_no_leaks()


def test_out_of_vocabulary_ids_are_refused_at_admission(engine32):
    from heron.engine.errors import TokenIdError

    vocab = engine32.vocab_size
    with pytest.raises(TokenIdError, match=rf"stop_token_ids contains {vocab}, which is out of vocabulary") as err:
        engine32.add_request("oov1", None, SamplingParams(stop_token_ids=[vocab], min_tokens=2), prompt_token_ids=[1])
    assert err.value.param == "stop_token_ids"
    with pytest.raises(TokenIdError, match="prompt_token_ids contains -1"):
        engine32.add_request("oov2", None, SamplingParams(), prompt_token_ids=[5, -1])
    with pytest.raises(TokenIdError) as err:
        engine32.add_request("oov3", None, SamplingParams(allowed_token_ids=[10_000_000]), prompt_token_ids=[1])
    assert err.value.param == "allowed_token_ids"
    assert not engine32.requests and not engine32.has_unfinished()
