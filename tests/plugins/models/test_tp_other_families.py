"""Tensor parallelism beyond the Llama family: tp 2 gives tp 1's logits and embeddings (fp32, eager).

Gemma 2/3 (soft caps, sliding windows, q/k norms, scaled vocabulary-parallel embeddings, tied
head), GPT-2 (fused Conv1D ``c_attn`` split by heads) and the mixtures of experts (Mixtral,
Qwen2-MoE with a shared expert and a dense layer, Qwen3-MoE; per-expert and stacked checkpoints)
run :data:`MIXED_PLAN` at tp 1 here and at tp 2 in two gloo processes that start once for all of
them. Every case splits the vocabulary (259 rows) and some MLP or expert width unevenly; Gemma 3
has one KV head (replicated on both ranks). BERT / XLM-RoBERTa encoders run several whole prompts
in one step at tp 2 in a second start-up: every token's hidden state, the pooled embeddings and
the classifier logits must equal tp 1's. Cheap in-process checks: the MoE block's rank shards sum
to the whole block with one all-reduce, and the transformers fallback refuses tp > 1 clearly.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from heron.interfaces import ModelContext
from heron.layers import MixtureOfExperts, pool_hidden
from heron.plugins import registry
from heron.testing.parallel import TensorParallelTestError, compare_tp_many, free_port
from tests.helpers_model import PagedRunner, make_batch, tiny_checkpoint, tiny_config

_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 24, "sliding_window": 4, "vocab_size": 259}
_LOCAL_GLOBAL = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
    "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
}
_QWEN2_MOE = {**_IDS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 33,
              "shared_expert_intermediate_size": 47, "mlp_only_layers": [1], "vocab_size": 259}
#: case -> (model type, config overrides); "-stacked" cases are re-saved in transformers 5.x's stacked layout
CASES = {
    "gemma2-softcap-tied": ("gemma2", {**_GEMMA, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0,
                                       "tie_word_embeddings": True, "intermediate_size": 95}),
    "gemma3-kv1-untied": ("gemma3_text", {**_GEMMA, "num_key_value_heads": 1, "final_logit_softcapping": 6.0,
                                          "layer_types": ["sliding_attention", "full_attention"],
                                          "rope_parameters": _LOCAL_GLOBAL, "tie_word_embeddings": False}),
    "gpt2": ("gpt2", {"n_inner": 97, "vocab_size": 259}),
    "mixtral": ("mixtral", {**_IDS, "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 95,
                            "vocab_size": 259}),
    "qwen2_moe-shared": ("qwen2_moe", _QWEN2_MOE),
    "qwen2_moe-stacked": ("qwen2_moe", _QWEN2_MOE),
    "qwen3_moe": ("qwen3_moe", {**_IDS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                "norm_topk_prob": True, "head_dim": 16, "vocab_size": 259, "tie_word_embeddings": True}),
}


@pytest.fixture(scope="module")
def tp2_diffs(tmp_path_factory):
    paths = []
    for name, (kind, overrides) in CASES.items():
        path = tmp_path_factory.mktemp(name)
        hf_model = tiny_checkpoint(tiny_config(kind, **overrides), path)
        if name.endswith("-stacked"):  # experts as [E, 2I, H] / [E, H, I] tensors
            state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
            assert any(k.endswith("mlp.experts.gate_up_proj") for k in state)
            save_file(state, str(path / "model.safetensors"))  # replaces the per-expert file
        paths.append(path)
    diffs = dict(zip(CASES, compare_tp_many(paths, 2), strict=True))
    print(f"\ntp 2: max |logit diff| vs tp 1 {diffs}")
    return diffs


@pytest.mark.parametrize("case", list(CASES))
def test_tp2_logits_match_tp1(tp2_diffs, case):
    assert tp2_diffs[case] < 1e-5


# --- encoders: hidden states, pooled embeddings and classifier logits ---------------------------------------

_PROMPTS = {"a": [2, 5, 9, 3, 7, 8, 3], "b": [2, 100, 200, 3, 40, 3], "c": [2, *range(10, 30), 3]}
_ENCODERS = {"bert": ("bert", False), "bert-classifier": ("bert", True), "xlm_roberta-classifier": ("xlm-roberta", True)}


def _tiny_encoder(model_type: str, path, classifier: bool) -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=97, vocab_size=259, max_position_embeddings=64,
                                  initializer_range=0.1, pad_token_id=1, sep_token_id=3)
    if classifier:
        config.num_labels = 3
    tiny_checkpoint(config, path, auto_class=AutoModelForSequenceClassification if classifier else AutoModel)


def _encode(path: str, rank: int = 0, size: int = 1) -> dict[str, torch.Tensor]:
    """Every prompt whole in one step: per prompt its hidden states, CLS and mean embeddings, class logits."""
    runner = PagedRunner.load(path, "eager", tp_rank=rank, tp_size=size)
    lens = [len(p) for p in _PROMPTS.values()]
    tables = [[runner.free.pop() for _ in range(math.ceil(n / runner.block_size))] for n in lens]
    batch = make_batch(lens, lens, tables, runner.block_size)
    batch.attn_metadata = runner.backend.build_batch(batch)
    ids = torch.tensor([t for p in _PROMPTS.values() for t in p])
    with torch.inference_mode():
        hidden = runner.model(ids, torch.cat([torch.arange(n) for n in lens]), batch)  # [T, H]
        out = {}
        for rid, rows in zip(_PROMPTS, hidden.split(lens), strict=True):
            out |= {f"{rid}.hidden": rows, f"{rid}.cls": pool_hidden(rows, "CLS"), f"{rid}.mean": pool_hidden(rows, "MEAN")}
            if "classify" in runner.model.supported_tasks:
                out[f"{rid}.logits"] = runner.model.classify(rows)
    return out


def _encoder_rank(rank: int, size: int, port: int, paths: list[str], results) -> None:
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                                timeout=timedelta(seconds=120))
        outs = [{k: v.numpy() for k, v in _encode(p, rank, size).items()} for p in paths]
        results.put(("ok", rank, outs if rank == 0 else None))
    except BaseException:  # noqa: BLE001 - the traceback goes back to the test
        results.put(("error", rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _encode_tp(paths: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    """Rank 0's :func:`_encode` of every checkpoint with ``size`` ranks (one start-up for all)."""
    ctx = mp.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_encoder_rank, args=(r, size, port, paths, results), daemon=True) for r in range(size)]
    for p in procs:
        p.start()
    try:
        got = None
        for _ in procs:
            try:
                kind, rank, payload = results.get(timeout=180)
            except queue.Empty:
                raise TensorParallelTestError("encoder ranks did not finish in time") from None
            if kind == "error":
                raise TensorParallelTestError(f"rank {rank} failed:\n{payload}")
            got = payload if rank == 0 else got
        return [{k: torch.from_numpy(v) for k, v in out.items()} for out in got]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


@pytest.fixture(scope="module")
def encoder_diffs(tmp_path_factory):
    paths = []
    for name, (kind, classifier) in _ENCODERS.items():
        path = tmp_path_factory.mktemp(name)
        _tiny_encoder(kind, path, classifier)
        paths.append(str(path))
    diffs = {}
    for name, path, got in zip(_ENCODERS, paths, _encode_tp(paths, 2), strict=True):
        want = _encode(path)
        assert got.keys() == want.keys()
        for key in want:
            what = key.split(".")[1]
            diffs[(name, what)] = max(diffs.get((name, what), 0.0), float((got[key] - want[key]).abs().max()))
    print(f"\ntp 2 encoders: max |diff| vs tp 1 {diffs}")
    return diffs


@pytest.mark.parametrize("case", list(_ENCODERS))
def test_tp2_encoder_outputs_match_tp1(encoder_diffs, case):
    got = {what: d for (name, what), d in encoder_diffs.items() if name == case}
    assert {"hidden", "cls", "mean"} <= got.keys()
    assert ("logits" in got) == case.endswith("classifier")
    assert max(got.values()) < 1e-5, got


# --- in-process checks ------------------------------------------------------------------------------------------

def test_moe_rank_shards_sum_to_the_whole_block(monkeypatch):
    """Two ranks' partial outputs (experts split 17 + 16 rows, shared expert 24 + 23) add up to tp 1's block,
    and the block all-reduces once, after the routed and shared experts combine."""
    import heron.layers.moe as moe

    calls = []
    monkeypatch.setattr(moe, "all_reduce", lambda x: calls.append(x.shape) or x)
    torch.manual_seed(0)
    kw = dict(hidden_size=64, num_experts=4, top_k=2, intermediate_size=33, renormalize=False,
              shared_expert_intermediate_size=47)
    full = MixtureOfExperts(**kw)
    for p in full.parameters():
        torch.nn.init.normal_(p, std=0.2)
    weights = {name: p.detach() for name, p in full.named_parameters()}  # full tensors, experts stacked [E, 2I, H]
    shards = [MixtureOfExperts(**kw, rank=r, size=2) for r in range(2)]
    for shard in shards:
        assert shard.shared_expert.down_proj.tp_output is None  # its partial sum waits for the block's reduce
        for name, param in shard.named_parameters():
            loader = getattr(shard.get_submodule(name.rpartition(".")[0]), "weight_loader", None)
            if loader is None:  # replicated: the router and the shared expert's gate
                param.data.copy_(weights[name])
            else:
                loader(param, weights[name], None)
    assert [s.experts.gate_up_proj.shape[1] for s in shards] == [34, 32]
    x = torch.randn(9, 64)
    with torch.no_grad():
        want = full(x)
        calls.clear()
        got = shards[0](x) + shards[1](x)
    assert calls == [torch.Size([9, 64])] * 2  # one all-reduce per rank per block
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _build(config, rank: int, size: int):
    cls = registry("models").load(config.architectures[0])
    return cls(config, ModelContext(torch.float32, torch.device("cpu"), None, tp_rank=rank, tp_size=size))


def test_rank_holds_its_shard_only():
    """Rank 1 of 2: GPT-2's c_attn holds 2 of 4 heads of q, k and v; Gemma 3's one KV head is replicated."""
    gpt2 = _build(tiny_config("gpt2", n_inner=97, vocab_size=259, tie_word_embeddings=True), 1, 2)
    block = gpt2.transformer.h[0]
    assert block.attn.c_attn.weight.shape == (3 * 32, 64) and block.attn.c_proj.weight.shape == (64, 32)
    assert block.attn.attn.num_heads == 2 and block.mlp.c_fc.weight.shape == (48, 64)
    assert gpt2.transformer.wte.weight.shape == (129, 64) and gpt2.lm_head.weight is gpt2.transformer.wte.weight
    assert gpt2.transformer.wpe.weight.shape == (64, 64)  # replicated
    gemma = _build(tiny_config("gemma3_text", head_dim=16, num_key_value_heads=1), 1, 2)
    attn = gemma.model.layers[0].self_attn
    assert (attn.num_heads, attn.num_kv_heads, attn.qkv_proj.heads.q_start) == (2, 1, 2)
    assert attn.qkv_proj.weight.shape == ((2 + 1 + 1) * 16, 64) and attn.o_proj.weight.shape == (64, 32)


def test_native_families_declare_tensor_parallel():
    """Every built-in model plugin splits over ranks; the transformers fallback declares that it does not."""
    models = registry("models")
    native = [n for n in models.names() if models.load(n).__module__.startswith("heron_plugins.")]
    declared = {n: models.load(n).supports_tensor_parallel for n in native}
    assert declared.pop("transformers") is False
    assert declared and all(declared.values()), declared


def test_transformers_fallback_refuses_tp_clearly():
    cls = registry("models").load("transformers")
    ctx = ModelContext(torch.float32, torch.device("cpu"), None, tp_rank=0, tp_size=2)
    with pytest.raises(ValueError, match=r"transformers fallback cannot split LlamaForCausalLM over 2 .*"
                                         r"--tensor-parallel-size 1"):
        cls(tiny_config("llama"), ctx)
