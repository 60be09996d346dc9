"""``SamplingParams.check_token_ids``: every request-supplied id inside the vocabulary."""

from __future__ import annotations

import pytest

from heron.engine import SamplingParams
from heron.engine.errors import RequestRejectedError, TokenIdError

VOCAB = 49152


@pytest.mark.parametrize(("field", "params", "bad"), [
    ("allowed_token_ids", SamplingParams(allowed_token_ids=[5, 10_000_000]), 10_000_000),
    ("allowed_token_ids", SamplingParams(allowed_token_ids=[-1]), -1),
    ("stop_token_ids", SamplingParams(stop_token_ids=[VOCAB], min_tokens=4), VOCAB),
    ("logit_bias", SamplingParams(logit_bias={"-3": 1.0}), -3),
    ("logit_bias", SamplingParams(logit_bias={VOCAB + 7: -100}), VOCAB + 7),
])
def test_ids_outside_the_vocabulary_are_refused_naming_the_field(field, params, bad):
    with pytest.raises(TokenIdError) as err:
        params.check_token_ids(VOCAB)
    assert err.value.param == field and err.value.token_id == bad
    assert str(err.value) == (f"{field} contains {bad}, which is out of vocabulary: the vocabulary has {VOCAB} tokens "
                              f"(ids 0 to {VOCAB - 1}).")
    assert isinstance(err.value, ValueError) and isinstance(err.value, RequestRejectedError)


def test_tokenized_bad_words_are_checked():
    params = SamplingParams(bad_words=["x"])
    params._bad_words_ids = [[1, 2], [VOCAB]]
    with pytest.raises(TokenIdError, match=r"bad_words contains 49152") as err:
        params.check_token_ids(VOCAB)
    assert err.value.param == "bad_words"


def test_ids_inside_the_vocabulary_pass():
    SamplingParams(allowed_token_ids=[0, VOCAB - 1], stop_token_ids=[2], logit_bias={0: 1, VOCAB - 1: -1},
                   min_tokens=1).check_token_ids(VOCAB)


def test_max_tokens_zero_is_allowed_and_negative_is_not():
    assert SamplingParams(max_tokens=0, prompt_logprobs=1).max_tokens == 0
    with pytest.raises(ValueError, match="max_tokens must be non-negative"):
        SamplingParams(max_tokens=-1)
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(max_tokens=0, min_tokens=1)


def test_reasoning_gate_must_be_a_factory():
    with pytest.raises(TypeError, match="zero-argument factory"):
        SamplingParams(reasoning_gate=object())
    assert SamplingParams(reasoning_gate=list).reasoning_gate is list
