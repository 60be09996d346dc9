"""GrammarBackend with the real SmolLM2 tokenizer: decoding random logits through the mask
always gives output that satisfies the constraint; batching, rollback, EOS, cache and errors."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from heron.structured import (
    GrammarBackend,
    StructuredOutputError,
    StructuredOutputsParams,
    required_tools_schema,
    tool_calls_from_json,
)

pytestmark = pytest.mark.slow

SAMPLES = 20  # sequences per constraint, decoded as one batch
CAP = 160  # tokens per sequence at most
FREE = 24  # steps of unbiased sampling before steering towards the end


@pytest.fixture(scope="module")
def tok(checkpoint):
    return checkpoint.tokenizer


@pytest.fixture(scope="module")
def vocab(checkpoint) -> int:
    return checkpoint.hf_config.vocab_size


@pytest.fixture(scope="module")
def backend(checkpoint, vocab) -> GrammarBackend:
    return GrammarBackend(checkpoint.tokenizer, vocab, stop_token_ids=checkpoint.eos_token_ids)


@pytest.fixture(scope="module")
def finish_bias(backend, vocab) -> torch.Tensor:
    """Whole-number preference levels per token, added to the noise after FREE steps.

    Random text almost never ends by itself: inside a JSON string ~48k of 49k tokens are allowed
    and only a handful close it. So after FREE steps each token gets a level: EOS 5, a quote
    followed by closers only (``"``, ``"}``, ``"]}``) 4, other closers only (``]``, ``})``) 3, a
    bare comma 2 (to reach required fields or minItems), other text 1, pure whitespace 0. The
    noise is in [0, 1), so levels act lexicographically: the sampler draws uniformly among the
    *allowed* tokens of the best allowed level. This is sound because the grammar mask alone
    decides what is allowed (the bias only chooses among allowed tokens, so every output is
    still built from accepted tokens only), and each pick of the top levels closes a string, a
    container or the output, so every sequence here ends well within CAP.
    """
    level = torch.ones(vocab)
    for i, piece in enumerate(backend.tokenizer_info.decoded_vocab[:vocab]):
        text = piece.decode("utf-8", "replace")
        if text and set(text) <= set('"]})'):
            level[i] = 4 if text[0] == '"' else 3
        elif text.strip() == ",":
            level[i] = 2
        elif text and not text.strip():
            level[i] = 0
    level[backend.stop_token_ids] = 5
    return level


def decode(backend, tok, finish_bias, params, *, seed=0, n=SAMPLES):
    """Sample ``n`` sequences as one batch through ``backend.apply``.

    Logits are iid Uniform(0, 1) noise per step: the argmax of iid continuous noise over the
    allowed set is a uniform draw from it, i.e. temperature-1 sampling from equal logits (the
    Gumbel-max argument, any continuous noise works), at a fraction of the cost of
    softmax + multinomial over 49k columns on this 2-core CPU.

    Returns the texts and whether each sequence ended with EOS (False = it hit CAP).
    """
    gen = torch.Generator().manual_seed(seed)
    compiled = backend.compile(params)
    matchers = [backend.new_matcher(compiled) for _ in range(n)]
    out: list[list[int]] = [[] for _ in range(n)]
    active = list(range(n))
    for step in range(CAP):
        if not active:
            break
        logits = torch.rand(len(active), finish_bias.shape[0], generator=gen)
        if step >= FREE:
            logits += finish_bias
        backend.apply(logits, list(range(len(active))), [matchers[i] for i in active])
        for row, token in enumerate(logits.argmax(dim=-1).tolist()):
            seq = active[row]
            assert matchers[seq].accept(token), "a token the mask allowed was rejected"
            if token not in backend.stop_token_ids:
                out[seq].append(token)
        active = [i for i in active if not matchers[i].is_terminated()]
    return [tok.decode(ids) for ids in out], [m.is_terminated() for m in matchers]


def check_all(texts, ended, check) -> None:
    """Every sequence that ended with EOS satisfies ``check``; only CAP may cut one short."""
    assert sum(ended) >= len(ended) - 1, f"only {sum(ended)}/{len(ended)} ended"
    for text, done in zip(texts, ended, strict=True):
        if done:
            check(text)
    assert len(set(texts)) > 1, "random decoding should not give identical outputs"


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
        },
        "tags": {
            "type": "array",
            "items": {"enum": ["red", "green", "blue"]},
            "minItems": 1,
            "maxItems": 3,
        },
        "score": {"type": "number", "minimum": -1.5, "maximum": 2.5},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "address", "tags", "score"],
}
ITEMS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 999},
            "kind": {"enum": ["x", "y"]},
        },
        "required": ["id", "kind"],
    },
    "minItems": 2,
    "maxItems": 4,
}
CODE = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10},
    },
    "required": ["code", "ratio", "count"],
}


@pytest.mark.parametrize(
    ("schema", "compact"),
    [(PERSON, True), (PERSON, False), (ITEMS, True), (CODE, True)],
    ids=["nested", "nested-any-whitespace", "array-of-objects", "pattern-bounds"],
)
def test_json_schema_outputs_validate(backend, tok, finish_bias, schema, compact):
    params = StructuredOutputsParams(json=schema, disable_any_whitespace=compact)
    texts, ended = decode(backend, tok, finish_bias, params)
    check_all(texts, ended, lambda text: jsonschema.validate(json.loads(text), schema))


def test_json_object_outputs_are_objects(backend, tok, finish_bias):
    texts, ended = decode(backend, tok, finish_bias, StructuredOutputsParams(json_object=True))
    check_all(texts, ended, lambda text: isinstance(json.loads(text), dict) or pytest.fail(text))


def test_required_tool_calls_decode_to_calls(backend, tok, finish_bias):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 10}},
                    "required": ["city"],
                },
            },
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    schema = required_tools_schema(tools, parallel=False)
    params = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
    texts, ended = decode(backend, tok, finish_bias, params)

    def check(text):
        jsonschema.validate(json.loads(text), schema)
        [(name, arguments)] = tool_calls_from_json(text)
        assert name in ("get_weather", "now") and isinstance(json.loads(arguments), dict)

    check_all(texts, ended, check)


def test_regex_outputs_fullmatch(backend, tok, finish_bias):
    pattern = r"(cat|dog)s? [0-9]{1,3} [a-z]{2,10}@[a-z]{2,10}\.(com|org)"
    texts, ended = decode(backend, tok, finish_bias, StructuredOutputsParams(regex=pattern))
    check_all(texts, ended, lambda text: re.fullmatch(pattern, text) or pytest.fail(text))


def test_choice_outputs_are_one_of_the_choices(backend, tok, finish_bias):
    choices = ["red", "green", 'dark "navy" blue', "back\\slash", "ünïcode ✓", "new\nline"]
    texts, ended = decode(backend, tok, finish_bias, StructuredOutputsParams(choice=choices))
    assert all(ended)
    assert set(texts) <= set(choices) and len(set(texts)) >= 3


def test_ebnf_grammar_outputs_parse(backend, tok, finish_bias):
    grammar = """
root ::= "(" list ")"
list ::= atom ("," atom)*
atom ::= [a-z]+ | "(" list ")"
"""

    def check(text):  # collapse innermost lists until one remains
        while text != "_":
            text, n = re.subn(r"\((?:[a-z]+|_)(?:,(?:[a-z]+|_))*\)", "_", text)
            assert n, f"not a nested list: {text!r}"

    texts, ended = decode(backend, tok, finish_bias, StructuredOutputsParams(grammar=grammar))
    check_all(texts, ended, check)


def test_apply_leaves_unconstrained_rows_untouched(backend, vocab):
    compiled = backend.compile(StructuredOutputsParams(choice=["yes", "no"]))
    logits = torch.randn(4, vocab, generator=torch.Generator().manual_seed(1))
    before = logits.clone()
    backend.apply(logits, [1, 3], [backend.new_matcher(compiled), backend.new_matcher(compiled)])
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    for row in (1, 3):
        allowed = torch.isfinite(logits[row])
        assert 2 <= int(allowed.sum()) < 20  # "yes"/"no" and their first pieces
        assert torch.equal(logits[row][allowed], before[row][allowed])


def test_wider_logits_are_masked_past_the_vocab(checkpoint, tok, vocab):
    padded = GrammarBackend(tok, vocab + 64, stop_token_ids=checkpoint.eos_token_ids)
    matcher = padded.new_matcher(padded.compile(StructuredOutputsParams(json_object=True)))
    assert matcher.accept(tok.encode('{"', add_special_tokens=False)[0])  # inside a key string
    logits = torch.zeros(3, vocab + 64 + 7)  # 7 more columns than even the backend knows
    padded.apply(logits, [0, 2], [matcher, matcher])
    assert torch.isneginf(logits[[0, 2], vocab:]).all()
    assert torch.isfinite(logits[0, :vocab]).sum() > 40_000  # most text may go in a string
    assert not logits[1].isneginf().any()


def test_eos_and_special_tokens(backend, tok, vocab):
    eos = backend.stop_token_ids[0]
    m = backend.new_matcher(backend.compile(StructuredOutputsParams(json={"type": "string"})))
    logits = torch.zeros(1, vocab)
    backend.apply(logits, [0], [m])
    assert logits[0, eos].isneginf()  # nothing is complete yet
    assert m.accept(tok.encode('"', add_special_tokens=False)[0])
    logits = torch.zeros(1, vocab)
    backend.apply(logits, [0], [m])
    special = [i for i in tok.all_special_ids if i != eos]
    assert special and logits[0, special].isneginf().all()  # no <|im_start|> inside a string
    for token in tok.encode('ab"', add_special_tokens=False):
        assert m.accept(token)
    assert m.is_completed() and not m.is_terminated()
    assert not m.accept(tok.encode("x", add_special_tokens=False)[0])  # nothing after the value
    assert m.accept(eos) and m.is_terminated()
    logits = torch.zeros(1, vocab)
    backend.apply(logits, [0], [m])  # a terminated matcher allows only the stop tokens
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == backend.stop_token_ids


def test_rollback_and_reset(backend, tok):
    m = backend.new_matcher(backend.compile(StructuredOutputsParams(json={"type": "object"})))
    ids = tok.encode('{"a": [1, 2]}', add_special_tokens=False)
    assert all(m.accept(t) for t in ids) and m.num_accepted == len(ids)
    assert m.accept(backend.stop_token_ids[0]) and m.is_terminated()
    m.rollback(3)  # the stop token and the last two pieces
    assert not m.is_terminated() and m.num_accepted == len(ids) - 2
    assert all(m.accept(t) for t in ids[-2:]) and m.is_completed()
    with pytest.raises(ValueError, match="only"):
        m.rollback(m.num_accepted + 1)
    m.reset()
    assert m.num_accepted == 0 and not m.is_completed()
    assert not m.accept(tok.encode("]", add_special_tokens=False)[0])
    assert m.accept(ids[0]) and m.num_accepted == 1


def test_cache_returns_the_same_compiled_grammar(checkpoint, tok, vocab):
    be = GrammarBackend(tok, vocab, cache_size=2)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    first = be.compile(StructuredOutputsParams(json=schema))
    assert be.compile(StructuredOutputsParams(json=json.dumps(schema))) is first
    future = be.compile_async(StructuredOutputsParams(json=dict(schema)))
    assert future.result(timeout=30) is first
    other = be.compile_async(StructuredOutputsParams(regex="[0-9]+"))
    assert other.result(timeout=30) is not first
    be.compile(StructuredOutputsParams(regex="[a-z]+"))  # evicts the least recently used
    assert be.compile(StructuredOutputsParams(json=schema)) is not first
    be.shutdown()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            StructuredOutputsParams(json={"type": "frobnicate"}),
            'Invalid JSON schema: .*"frobnicate"',
        ),
        (StructuredOutputsParams(json={"$ref": "#/$defs/missing"}), "Invalid JSON schema"),
        (StructuredOutputsParams(regex="(ab"), "Invalid regex: .*not closed"),
        (
            StructuredOutputsParams(grammar='root ::= "a" missing'),
            'Invalid EBNF grammar: .*"missing" is not defined',
        ),
        (StructuredOutputsParams(grammar='start ::= "a"'), "Invalid EBNF grammar: .*root rule"),
    ],
    ids=["json-type", "json-ref", "regex", "grammar-rule", "grammar-root"],
)
def test_invalid_constraints_raise(backend, params, message):
    with pytest.raises(StructuredOutputError, match=message) as e:
        backend.compile(params)
    assert e.value.param == "structured_outputs" and "project/cpp" not in str(e.value)
    future = backend.compile_async(params)  # failures are not cached: a fresh try, same error
    assert isinstance(future.exception(timeout=30), StructuredOutputError)
