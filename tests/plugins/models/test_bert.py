"""BERT / XLM-RoBERTa encoder plugins match transformers on tiny random checkpoints, on every backend.

Several requests of different lengths run through a paged cache in ONE step, each its whole
prompt (as the engine schedules encoders); every token's last hidden state, and the classifiers'
logits for single texts and for sentence pairs (token types), are compared with transformers.
"""

from __future__ import annotations

import math

import pytest
import torch

from heron.layers import UnsupportedBackendError, attention_needs
from heron.plugins import registry
from tests.helpers_model import PagedRunner, make_batch, tiny_checkpoint

BACKENDS = tuple(registry("attention_backends").names())
CLS, SEP, PAD = 2, 3, 1  # ids of the tiny vocabulary's special tokens (XLM-R: <s>=0 </s>=2 <pad>=1)
ATOL = 1e-4
LENGTHS = {"a": 9, "b": 3, "c": 17, "d": 6}


def tiny_encoder(model_type: str, path, classifier: bool, seed: int = 0, **overrides):
    """A random-weight transformers encoder saved under ``path`` (LayerNorms and biases randomised)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    config = AutoConfig.for_model(
        model_type, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        vocab_size=256, max_position_embeddings=64, initializer_range=0.1, pad_token_id=PAD, **overrides,
    )
    if classifier:
        config.num_labels = 3
    auto = AutoModelForSequenceClassification if classifier else AutoModel
    return tiny_checkpoint(config, path, seed, auto_class=auto)


def encode(runner: PagedRunner, prompts: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Every prompt whole in one step through the heron model: each request's hidden states [n, H]."""
    tables = []
    for toks in prompts.values():
        tables.append([runner.free.pop() for _ in range(math.ceil(len(toks) / runner.block_size))])
    lens = [len(toks) for toks in prompts.values()]
    batch = make_batch(lens, lens, tables, runner.block_size)
    batch.attn_metadata = runner.backend.build_batch(batch)
    ids = torch.tensor([t for toks in prompts.values() for t in toks])
    positions = torch.cat([torch.arange(n) for n in lens])
    with torch.inference_mode():
        hidden = runner.model(ids, positions, batch)
    return dict(zip(prompts, hidden.split(lens), strict=True))


def random_prompts(seed: int = 0, lengths: dict[str, int] = LENGTHS) -> dict[str, list[int]]:
    """``[CLS] text [SEP]`` prompts (text tokens avoid the special ids)."""
    g = torch.Generator().manual_seed(seed)
    return {rid: [CLS, *torch.randint(4, 256, (n - 2,), generator=g).tolist(), SEP] for rid, n in lengths.items()}


def pair_prompts(seed: int = 1) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """``[CLS] A [SEP] B [SEP]`` prompts and the token types a tokenizer gives them."""
    ids, types = {}, {}
    for rid, (a, b) in {"p": (4, 6), "q": (9, 2), "r": (1, 12)}.items():
        first, second = random_prompts(seed, {"x": a + 2, "y": b + 1}).values()
        ids[rid] = first + second[1:]
        types[rid] = [0] * len(first) + [1] * len(second[1:])
    return ids, types


def load_runners(path) -> dict[str, PagedRunner]:
    """A runner per installed backend that accepts the encoder (eager and torch_sdpa must)."""
    runners = {}
    for name in BACKENDS:
        try:
            runners[name] = PagedRunner.load(path, name)
        except UnsupportedBackendError as err:
            assert str(err).startswith(f"{name}: "), err
    assert {"eager", "torch_sdpa"} <= set(runners), runners
    return runners


def hf_forward(hf_model, ids: list[int], types: list[int] | None = None):
    with torch.inference_mode():
        kwargs = {} if types is None else {"token_type_ids": torch.tensor([types])}
        return hf_model(input_ids=torch.tensor([ids]), **kwargs)


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_hidden_states_match_transformers(model_type, tmp_path):
    hf_model = tiny_encoder(model_type, tmp_path, classifier=False)
    prompts = random_prompts()
    for backend, runner in load_runners(tmp_path).items():
        assert attention_needs(runner.model)["non_causal"] is True
        for rid, got in encode(runner, prompts).items():
            want = hf_forward(hf_model, prompts[rid]).last_hidden_state[0]
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=lambda m, r=rid, b=backend: f"{b} {r}: {m}")


@pytest.mark.parametrize("backend", ["eager", "torch_sdpa"])
def test_single_request_fresh_prefill(backend, tmp_path):
    # one request alone takes torch_sdpa's fresh-prefill path (is_causal=False)
    hf_model = tiny_encoder("bert", tmp_path, classifier=False, seed=3)
    prompt = random_prompts(2, {"x": 11})
    got = encode(PagedRunner.load(tmp_path, backend), prompt)["x"]
    want = hf_forward(hf_model, prompt["x"]).last_hidden_state[0]
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_classifier_logits_match_transformers(model_type, tmp_path):
    hf_model = tiny_encoder(model_type, tmp_path, classifier=True, sep_token_id=SEP)
    singles = random_prompts(4)
    pairs, types = pair_prompts()
    if model_type == "xlm-roberta":  # one token type: RoBERTa tokenizers give pairs all-zero types
        types = {rid: [0] * len(t) for rid, t in types.items()}
    for backend, runner in load_runners(tmp_path).items():
        model = runner.model
        assert model.num_labels == 3 and "classify" in model.supported_tasks
        for prompts, kinds in ((singles, None), (pairs, types)):
            for rid, hidden in encode(runner, prompts).items():
                with torch.inference_mode():
                    got = model.classify(hidden)
                want = hf_forward(hf_model, prompts[rid], None if kinds is None else kinds[rid]).logits[0]
                assert got.shape == (3,) and got.dtype == torch.float32
                torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=lambda m, r=rid, b=backend: f"{b} {r}: {m}")


def test_pair_token_types_change_bert_logits(tmp_path):
    # without the separator id every token is type 0: the pair's logits then differ from transformers'
    hf_model = tiny_encoder("bert", tmp_path, classifier=True)
    pairs, types = pair_prompts()
    runner = PagedRunner.load(tmp_path, "eager")
    assert runner.model.sep_token_id is None
    hidden = encode(runner, {"p": pairs["p"]})["p"]
    want = hf_forward(hf_model, pairs["p"], types["p"]).logits[0]
    with torch.inference_mode():
        assert (runner.model.classify(hidden) - want).abs().max() > 1e-3
    runner.model.sep_token_id = SEP  # what the engine sets from the tokenizer
    hidden = encode(runner, {"p": pairs["p"]})["p"]
    with torch.inference_mode():
        torch.testing.assert_close(runner.model.classify(hidden), want, atol=ATOL, rtol=0)


def test_loads_prefixed_and_plain_names_and_refuses_unknown(tmp_path):
    from safetensors.torch import load_file

    from heron.interfaces import ModelContext
    from heron_plugins.models.bert import BertModel

    hf_model = tiny_encoder("bert", tmp_path, classifier=False)
    weights = load_file(str(tmp_path / "model.safetensors"))
    ctx = ModelContext(dtype=torch.float32, device=torch.device("cpu"), attention_backend=None)
    plain = BertModel(hf_model.config, ctx)
    plain.load_weights(weights.items())
    prefixed = BertModel(hf_model.config, ctx)
    prefixed.load_weights((f"bert.{k}", v) for k, v in weights.items())
    for (name, a), b in zip(plain.state_dict().items(), prefixed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(KeyError, match="cls.predictions.bias"):
        BertModel(hf_model.config, ctx).load_weights([*weights.items(), ("cls.predictions.bias", torch.zeros(256))])
    with pytest.raises(ValueError, match="lacks tensors for: layers.0.qkv_proj.weight"):
        BertModel(hf_model.config, ctx).load_weights(
            (k, v) for k, v in weights.items() if k != "encoder.layer.0.attention.self.key.weight"
        )
