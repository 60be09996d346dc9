"""heron with PEFT adapters matches transformers + peft; mixed batches, slot swaps and reloads stay exact (fp32).

Each case runs prefills and decodes through heron's paged runner with the manager's per-step
state set before every forward, and compares every new token's logits with transformers + peft
(``PeftModel.from_pretrained`` on the same weights) fed the same chunks through its own cache.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

import heron.lora.manager as manager_module
from heron.lora import LoRAError, LoRALinear, LoRAManager, LoRARequest
from heron.testing.models import PagedRunner, hf_reference_logits

CPU = torch.device("cpu")
#: request -> new tokens per step: prefills together, then a prefill joining decodes, then decodes
PLAN = [{"x": 7, "y": 5, "z": 6}, {"x": 1, "y": 1, "z": 1, "w": 4}, {"x": 1, "y": 1, "z": 1, "w": 1}]


def manager(runner, max_loras=2, max_cpu_loras=None):
    return LoRAManager(runner.model, max_loras=max_loras, max_lora_rank=16, max_cpu_loras=max_cpu_loras,
                       dtype=torch.float32, device=CPU)


def register(mgr, name, path):
    return mgr.register(mgr.load(LoRARequest(name, 1, str(path))))


def peft_reference(hf_model, path):
    """transformers + peft: the HF model with the adapter at ``path`` injected (PeftModel.from_pretrained)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(hf_model), str(path)).eval().get_base_model()


def tokens_for(plan, seed=0):
    """rid -> its random token chunks, one per step that schedules it."""
    rng = random.Random(seed)
    out: dict[str, list[list[int]]] = {}
    for step in plan:
        for rid, n in step.items():
            out.setdefault(rid, []).append([rng.randrange(256) for _ in range(n)])
    return out


def feed(runner, mgr, plan, tokens, uid_of, prefix=""):
    """Run ``plan`` through ``runner`` (request ``prefix + rid``, adapter ``uid_of.get(rid)``); rid -> logits."""
    seen = dict.fromkeys(tokens, 0)
    logits: dict[str, list[torch.Tensor]] = {}
    for step in plan:
        new = {}
        for rid in step:
            new[prefix + rid], seen[rid] = tokens[rid][seen[rid]], seen[rid] + 1
        if mgr is not None:
            mgr.begin_step([uid_of.get(rid) for rid in step], [len(t) for t in new.values()])
        try:
            out = runner.step(new)
        finally:
            if mgr is not None:
                mgr.end_step()
        for rid in step:
            logits.setdefault(rid, []).append(out[prefix + rid])
    return {rid: torch.cat(parts) for rid, parts in logits.items()}


def worst(logits, tokens, reference):
    """Largest |heron - transformers| over every rid's logits."""
    return max(float((got - hf_reference_logits(reference, tokens[rid])).abs().max()) for rid, got in logits.items())


@pytest.fixture(scope="module")
def adapters(llama, make_adapter):
    """name -> (folder, transformers + peft reference): A rank 4 on q/v with rsLoRA, B rank 8 everywhere."""
    path_a, _ = make_adapter(llama[1], seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True)
    path_b, _ = make_adapter(llama[1], seed=2)
    return {name: (path, peft_reference(llama[1], path)) for name, path in (("a", path_a), ("b", path_b))}


@pytest.mark.parametrize("backend", ["eager", "torch_sdpa"])
def test_adapter_matches_transformers_peft(llama, adapters, backend):
    path, hf_model = llama
    runner = PagedRunner.load(path, backend)
    mgr = manager(runner)
    uid = register(mgr, "b", adapters["b"][0])
    tokens = tokens_for(PLAN)
    logits = feed(runner, mgr, PLAN, tokens, dict.fromkeys(tokens, uid))
    diff = worst(logits, tokens, adapters["b"][1])
    print(f"adapter vs peft ({backend}): max |logit diff| {diff:.2e}")
    assert diff < 1e-4
    assert worst(logits, tokens, hf_model) > 1e-2  # the adapter changes the output


def test_base_rows_are_the_base_model(llama, adapters):
    path, hf_model = llama
    tokens = tokens_for(PLAN)
    want = feed(PagedRunner.load(path, "eager"), None, PLAN, tokens, {})
    runner = PagedRunner.load(path, "eager")
    mgr = manager(runner)
    register(mgr, "b", adapters["b"][0])
    assert isinstance(runner.model.model.layers[0].self_attn.qkv_proj, LoRALinear)
    got = feed(runner, mgr, PLAN, tokens, {})
    for rid in want:
        assert torch.equal(got[rid], want[rid])  # no adapter in the step: the wrapper returns base(x) itself
    assert worst(got, tokens, hf_model) < 1e-4


def test_mixed_batch_rows_equal_each_row_alone(llama, adapters):
    path, hf_model = llama
    runner = PagedRunner.load(path, "eager", num_blocks=128)
    mgr = manager(runner)
    uid_a = register(mgr, "a", adapters["a"][0])
    warm = tokens_for([{"w": 5}, {"w": 1}], seed=3)
    before = feed(runner, mgr, [{"w": 5}, {"w": 1}], warm, {"w": uid_a}, prefix="warm-")  # A resident alone
    uid_b = register(mgr, "b", adapters["b"][0])  # B needs more rank in qkv_proj: the slots grow, A kept
    plan = [{"a1": 6, "base": 5, "b1": 7, "a2": 3}, {"a1": 1, "base": 1, "b1": 1, "a2": 1},
            {"b1": 2, "a1": 1, "base": 1, "a2": 1}]
    uid_of = {"a1": uid_a, "a2": uid_a, "b1": uid_b}
    tokens = tokens_for(plan, seed=7)
    mixed = feed(runner, mgr, plan, tokens, uid_of, prefix="mix-")
    refs = {"a1": adapters["a"][1], "a2": adapters["a"][1], "b1": adapters["b"][1], "base": hf_model}
    for rid in plan[0]:
        alone_plan = [{rid: step[rid]} for step in plan]
        alone = feed(runner, mgr, alone_plan, {rid: tokens[rid]}, uid_of, prefix="one-")[rid]
        torch.testing.assert_close(mixed[rid], alone, rtol=0, atol=1e-5)
        diff = float((mixed[rid] - hf_reference_logits(refs[rid], tokens[rid])).abs().max())
        print(f"mixed row {rid} vs peft: {diff:.2e}; vs alone: {float((mixed[rid] - alone).abs().max()):.2e}")
        assert diff < 1e-4
    assert worst(before, warm, adapters["a"][1]) < 1e-4


def test_one_slot_swaps_adapters_by_lru(llama, adapters):
    runner = PagedRunner.load(llama[0], "eager")
    mgr = manager(runner, max_loras=1)
    uid_a, uid_b = register(mgr, "a", adapters["a"][0]), register(mgr, "b", adapters["b"][0])
    order = [("r1", "a", uid_a), ("r2", "b", uid_b), ("r3", "a", uid_a), ("r4", "a", uid_a)]
    for rid, name, uid in order:  # consecutive steps: A, then B evicts A, then A evicts B
        plan = [{rid: 5}, {rid: 1}]
        tokens = tokens_for(plan, seed=len(rid) + ord(rid[-1]))
        assert worst(feed(runner, mgr, plan, tokens, {rid: uid}), tokens, adapters[name][1]) < 1e-4
    with pytest.raises(ValueError, match="uses 2 LoRA adapters but max_loras is 1"):
        mgr.begin_step([uid_a, uid_b], [1, 1])


def test_max_cpu_loras_reloads_from_disk(llama, adapters, monkeypatch):
    reads = []
    real = manager_module.load_adapter
    monkeypatch.setattr(manager_module, "load_adapter", lambda req, *a, **kw: reads.append(req.lora_name) or real(
        req, *a, **kw))
    runner = PagedRunner.load(llama[0], "eager")
    mgr = manager(runner, max_loras=1, max_cpu_loras=1)
    uid_a, uid_b = register(mgr, "a", adapters["a"][0]), register(mgr, "b", adapters["b"][0])  # B pushes A out
    for rid, name, uid in [("r1", "b", uid_b), ("r2", "a", uid_a), ("r3", "a", uid_a), ("r4", "b", uid_b)]:
        tokens = tokens_for([{rid: 6}], seed=ord(rid[-1]))
        assert worst(feed(runner, mgr, [{rid: 6}], tokens, {rid: uid}), tokens, adapters[name][1]) < 1e-4
    assert reads == ["a", "b", "a", "b"]  # A read again when needed; then B, which A had pushed out


def test_registry_api(llama, adapters):
    runner = PagedRunner.load(llama[0], "eager")
    mgr = manager(runner)
    uid = register(mgr, "a", adapters["a"][0])
    assert mgr.get("a") == (uid, LoRARequest("a", 1, str(adapters["a"][0])))
    assert mgr.name_of(uid) == "a" and mgr.get("zzz") is None
    with pytest.raises(LoRAError, match="registered already"):
        register(mgr, "a", adapters["b"][0])
    mgr.begin_step([uid], [3])
    mgr.end_step()
    assert mgr.remove("a") and not mgr.remove("a") and mgr.list() == []
    with pytest.raises(ValueError, match="not registered"):
        mgr.begin_step([uid], [3])
    assert register(mgr, "a", adapters["a"][0]) > uid  # uids are never reused (they key the prefix cache)
    assert [r.lora_name for r in mgr.list()] == ["a"]


def test_lru_evicts_the_least_recently_used_slot(llama, adapters, monkeypatch):
    runner = PagedRunner.load(llama[0], "eager", num_blocks=128)
    mgr = manager(runner, max_loras=2)
    uids = {name: register(mgr, name, adapters["b" if name == "b" else "a"][0]) for name in "abc"}
    loads = []
    real = mgr._materialize
    monkeypatch.setattr(mgr, "_materialize", lambda entry: loads.append(entry.request.lora_name) or real(entry))
    for i, name in enumerate("abacab"):
        rid = f"r{i}"
        tokens = tokens_for([{rid: 4}], seed=i)
        ref = adapters["b" if name == "b" else "a"][1]
        assert worst(feed(runner, mgr, [{rid: 4}], tokens, {rid: uids[name]}), tokens, ref) < 1e-4
    assert loads == ["a", "b", "c", "b"]  # c evicts b (a was used later); b evicts c; the last a, b stay


def test_refuses_models_without_lora_support(llama, monkeypatch):
    runner = PagedRunner.load(llama[0], "eager")
    monkeypatch.setattr(type(runner.model), "supports_lora", False)
    with pytest.raises(LoRAError, match="does not support LoRA"):
        manager(runner)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="max_cpu_loras"):
        manager(runner, max_loras=2, max_cpu_loras=1)
