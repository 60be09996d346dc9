"""LoRA adapters under tensor parallelism (fp32, gloo, 2 processes).

Sliced per rank, the adapters give exactly the single-rank deltas: column-parallel shards keep their
rows of ``B``, row-parallel shards their columns of ``A`` with the delta added before the all-reduce.
Through the offline engine, tp=2 with two adapters and the base model mixed in one batch gives the
same greedy tokens as tp=1, and adapters added or removed at runtime reach the worker.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from heron import LLM, SamplingParams
from heron.distributed.group import current_group
from heron.layers.parallel import (
    MergedColumnParallelLinear,
    ParallelOutput,
    QKVParallelLinear,
    RowParallelLinear,
)
from heron.lora import LoRAError, LoRALinear, LoRARequest, LoRAStepState
from heron.lora.sharding import layout_of, place_shard, split_collective
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

PROMPTS = [f"p{i}: " + "abcdefgh"[: i + 1] * 2 for i in range(6)]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
SETTINGS = {"dtype": "float32", "num_kv_blocks": 64, "enable_lora": True, "max_loras": 2, "max_lora_rank": 8}
ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_adapter(hf_model: Any, path: Path, seed: int, **config: Any) -> str:
    """A PEFT LoRA adapter with random non-zero A and B for ``hf_model``, saved at ``path``."""
    from peft import LoraConfig, get_peft_model

    options: dict[str, Any] = {"r": 8, "lora_alpha": 16, "target_modules": ALL_PROJ, "init_lora_weights": False}
    options.update(config)
    torch.manual_seed(seed)
    get_peft_model(copy.deepcopy(hf_model), LoraConfig(**options)).save_pretrained(str(path))
    return str(path)


# -- per-rank slices, in one process (no collectives: the ranks' outputs are summed or joined here) --


def _step(tokens: int) -> LoRAStepState:
    """Every token through the adapter in slot 0."""
    return LoRAStepState(slots=torch.tensor([0]), mask=None, all_slots=False, slot=0, num_tokens=tokens)


def _wrap(base: torch.nn.Module, shards: list[Any], tokens: int) -> LoRALinear:
    inner, collective = split_collective(base)
    layer = LoRALinear(inner, _step(tokens), 1, sum(a.shape[0] for _, a, _ in shards), torch.float32,
                       torch.device("cpu"), collective)
    layer.set_slot(0, shards)
    return layer


def test_column_parallel_slices_join_to_the_full_delta() -> None:
    """q/k/v (4 query heads over 2 KV heads) and gate/up: each rank's rows of the LoRA output are the full one's."""
    torch.manual_seed(0)
    x = torch.randn(5, 16)  # [T, hidden]
    cases = [
        (lambda rank, size: QKVParallelLinear(16, 4, 4, 2, rank=rank, size=size), [16, 8, 8]),
        (lambda rank, size: MergedColumnParallelLinear(16, [12, 12], rank=rank, size=size), [12, 12]),
    ]
    for build, parts in cases:
        full = build(0, 1)
        weight = torch.randn_like(full.weight)
        full.weight_loader(full.weight, weight)
        offsets = [sum(parts[:i]) for i in range(len(parts))]
        peft = [(torch.randn(3, 16), torch.randn(n, 3)) for n in parts]  # per part: A [r, in], B [rows, r]
        shards = [place_shard(full, (off, n), a, b, "test") for off, n, (a, b) in zip(offsets, parts, peft,
                                                                                         strict=True)]
        want = _wrap(full, shards, 5)(x)  # [T, sum(parts)]
        for rank in range(2):
            shard = build(rank, 2)
            shard.weight_loader(shard.weight, weight)
            layout = layout_of(shard)
            for use_local in (True, False):  # the model may name a part by its local rows or its full ones
                rows = [(local, count) if use_local else (off, n)
                        for (_, count, local), off, n in zip(layout.spans, offsets, parts, strict=True)]
                mine = [place_shard(shard, r, a, b, "test") for r, (a, b) in zip(rows, peft, strict=True)]
                got = _wrap(shard, mine, 5)(x)
                expected = torch.cat([want[:, off + start: off + start + count]
                                      for off, (start, count, _) in zip(offsets, layout.spans, strict=True)], dim=1)
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_row_parallel_delta_is_added_before_the_all_reduce() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 20)  # [T, in]
    full = RowParallelLinear(20, 12, bias=True)
    weight, bias = torch.randn_like(full.weight), torch.randn_like(full.bias)
    full.weight_loader(full.weight, weight)
    full.weight_loader(full.bias, bias)
    a, b = torch.randn(4, 20), torch.randn(12, 4)
    want = _wrap(full, [place_shard(full, None, a, b, "test")], 5)(x)
    total = torch.zeros_like(want)
    for rank in range(2):
        shard = RowParallelLinear(20, 12, bias=True, rank=rank, size=2)
        shard.weight_loader(shard.weight, weight)
        shard.weight_loader(shard.bias, bias)
        seen: list[torch.Tensor] = []
        shard.tp_output = lambda t, seen=seen: seen.append(t.clone()) or t  # stands for the all-reduce
        start, count = shard.in_span
        layer = _wrap(shard, [place_shard(shard, None, a, b, "test")], 5)
        assert layer.lora_a.shape[-1] == count and shard.tp_output is None  # A sliced; the wrapper runs it
        out = layer(x[:, start: start + count])
        # what reached the collective already holds this rank's share of the delta
        torch.testing.assert_close(seen[0], out)
        total += out
    torch.testing.assert_close(total, want, atol=1e-5, rtol=0)


def test_a_kernel_module_must_keep_the_split() -> None:
    """A kernel-converted row-parallel projection (ParallelOutput around the kernel's module) is sliced when
    the kernel's module carries ``in_span``, and refused with the fix when it does not."""
    shard = RowParallelLinear(20, 12, bias=False, rank=1, size=2)
    a, b = torch.randn(4, 20), torch.randn(12, 4)
    plain = torch.nn.Linear(shard.in_features, 12, bias=False)  # stands for a kernel's module
    with pytest.raises(LoRAError, match="--linear-kernel dense"):
        place_shard(ParallelOutput(plain, lambda t: t), None, a, b, "test")
    plain.in_span = shard.in_span
    _, a_local, _ = place_shard(ParallelOutput(plain, lambda t: t), None, a, b, "test")
    torch.testing.assert_close(a_local, a[:, 10:])


# -- the engine: tp=2 == tp=1 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny Llama, three adapters (A: rank 4 on q/v with rsLoRA; B and C: rank 8 everywhere) and
    tp=1 greedy tokens: a mixed batch (A, base, B, ...), then every prompt through C."""
    root = tmp_path_factory.mktemp("tp_lora")
    path = root / "llama"
    hf_model = tiny_checkpoint(tiny_config("llama"), path)
    save_tiny_tokenizer(path)
    loras = {
        "a": save_adapter(hf_model, root / "a", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                          use_rslora=True),
        "b": save_adapter(hf_model, root / "b", 2),
        "c": save_adapter(hf_model, root / "c", 3),
    }
    requests = {name: LoRARequest(name, i + 1, folder) for i, (name, folder) in enumerate(loras.items())}
    mixed = [requests["a"], None, requests["b"], requests["a"], requests["b"], None]
    llm = LLM(str(path), **SETTINGS)
    out = {
        "path": str(path), "requests": requests, "mixed": mixed,
        "base": _greedy(llm, [None] * len(PROMPTS)),
        "tp1_mixed": _greedy(llm, mixed),
        "tp1_c": _greedy(llm, [requests["c"]] * len(PROMPTS)),
    }
    llm.shutdown()
    assert all(len(t) == 16 for t in out["tp1_mixed"])
    # the adapters change the output (else the comparisons below would prove little)
    assert out["tp1_mixed"][0] != out["base"][0] and out["tp1_mixed"][2] != out["base"][2]
    assert out["tp1_c"][0] != out["tp1_mixed"][0] and out["tp1_mixed"][1] == out["base"][1]
    return out


def _greedy(llm: LLM, loras: list[LoRARequest | None]) -> list[list[int]]:
    outs = llm.generate(PROMPTS, GREEDY, lora_request=loras, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


@pytest.fixture
def alone() -> None:
    """One tensor-parallel engine per process at a time."""
    group = current_group()
    if group is not None:
        group.shutdown()


def test_tp2_lora_matches_tp1_and_runtime_updates_reach_the_worker(setup: dict[str, Any], alone: None,
                                                                    tmp_path: Path) -> None:
    requests = setup["requests"]
    with LLM(setup["path"], **SETTINGS, tensor_parallel_size=2) as llm:
        engine = llm.engine
        assert engine.parallel is not None and len(engine.parallel.procs) == 1
        assert _greedy(llm, setup["mixed"]) == setup["tp1_mixed"]
        assert _greedy(llm, [None] * len(PROMPTS)) == setup["base"]
        # unload "a", then load C's weights under the same name: it takes a's freed slot on every rank
        manager = engine.lora.manager
        slot_a = manager._slot_uid.index(manager.get("a")[0])
        assert engine.remove_lora("a") and slot_a not in [s for s, u in enumerate(manager._slot_uid) if u]
        swapped = LoRARequest("a", 7, requests["c"].lora_path)
        engine.add_lora(swapped)
        assert _greedy(llm, [swapped] * len(PROMPTS)) == setup["tp1_c"]
        assert manager._slot_uid[slot_a] == manager.get("a")[0]
        assert [r.lora_name for r in engine.list_loras()] == ["b", "a"]
        assert engine.parallel.control("lora_remove", lora_name="nope") == [None, False]
        # an adapter the worker cannot read (gone after rank 0 read it) is refused and undone on rank 0
        gone = tmp_path / "gone"
        shutil.copytree(requests["b"].lora_path, gone)
        late = LoRARequest("late", 8, str(gone))
        parsed = engine.lora.load(late)
        shutil.rmtree(gone)
        with pytest.raises(LoRAError, match=r"could not be loaded on every tensor-parallel rank: .*rank 1"):
            engine.add_lora(late, parsed)
        assert manager.get("late") is None and [r.lora_name for r in engine.list_loras()] == ["b", "a"]
        assert _greedy(llm, setup["mixed"][:1] * len(PROMPTS))[0] == setup["tp1_c"][0]  # "a" is C's now
    assert current_group() is None


IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
#: family -> (config overrides, PEFT targets): natively fused q/k/v (a whole fused B sliced per part),
#: GPT-2's Conv1D c_attn, a MoE shared expert whose down projection joins the block's one all-reduce
FAMILIES = {
    "phi3": (IDS, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    "gpt2": ({"n_inner": 96}, ["c_attn", "c_proj", "c_fc"]),
    "qwen2_moe": ({**IDS, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                   "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]}, ALL_PROJ),
}


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_other_families_tp2_lora_match_tp1(tmp_path: Path, alone: None, kind: str) -> None:
    overrides, targets = FAMILIES[kind]
    hf_model = tiny_checkpoint(tiny_config(kind, **overrides), tmp_path / kind)
    save_tiny_tokenizer(tmp_path / kind)
    adapter = LoRARequest("x", 1, save_adapter(hf_model, tmp_path / "x", 3, target_modules=targets))
    loras = [adapter, None] * (len(PROMPTS) // 2)
    settings = {**SETTINGS, "max_loras": 1}
    llm = LLM(str(tmp_path / kind), **settings)
    reference, base = _greedy(llm, loras), _greedy(llm, [None] * len(PROMPTS))
    llm.shutdown()
    assert reference[0] != base[0] and reference[1] == base[1]
    with LLM(str(tmp_path / kind), **settings, tensor_parallel_size=2) as split:
        assert _greedy(split, loras) == reference


def test_a_kernel_swap_keeps_the_split() -> None:
    """``apply_linear_kernel`` copies each layer's split onto the kernel's module, so adapters slice
    under any kernel."""
    from heron.layers.linear_selection import apply_linear_kernel

    class Copying:
        def convert(self, linear: torch.nn.Module, name: str) -> torch.nn.Module:
            out = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
            out.weight.data.copy_(linear.weight)
            return out

    model = torch.nn.Module()
    model.o_proj = RowParallelLinear(20, 12, bias=False, rank=1, size=2)
    model.qkv = QKVParallelLinear(16, 4, 4, 2, rank=1, size=2)
    spans, in_span = model.qkv.spans, model.o_proj.in_span
    assert apply_linear_kernel(model, Copying()) == 2
    assert isinstance(model.o_proj, ParallelOutput) and type(model.qkv) is torch.nn.Linear
    assert model.qkv.spans == spans
    _, a_local, _ = place_shard(model.o_proj, None, torch.randn(4, 20), torch.randn(12, 4), "test")
    assert a_local.shape == (4, in_span[1])
