"""Tensor parallelism through the offline engine: tp=2 (gloo, 2 processes, fp32) gives the same greedy
tokens as tp=1 (LoRA adapters included); what cannot split is refused; a dead worker fails the engine
instead of hanging; sleep/wake and profiling reach every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from heron import LLM, SamplingParams
from heron.distributed.group import TensorParallelError, current_group
from heron.engine.profiler import EngineProfiler
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

PROMPTS = [f"p{i}: " + "abcdefgh"[: i + 1] * 2 for i in range(8)]  # <= 20 tokens: 32 more fit in 64
GREEDY = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
SMALL = {"dtype": "float32", "num_kv_blocks": 64}  # 64 blocks x 16 tokens: plenty for 8 x 52 tokens


def _checkpoint(root: Path, kind: str, **overrides: object) -> str:
    path = root / kind
    tiny_checkpoint(tiny_config(kind, **overrides), path)
    save_tiny_tokenizer(path)
    return str(path)


def _greedy(llm: LLM) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[list[int]]]:
    """A tiny Llama checkpoint and its tp=1 greedy tokens."""
    path = _checkpoint(tmp_path_factory.mktemp("tp"), "llama")
    reference = _greedy(LLM(path, **SMALL))
    assert all(len(t) == 32 for t in reference)
    return path, reference


@pytest.fixture(scope="module")
def llama_tp2(llama: tuple[str, list[list[int]]]) -> LLM:
    llm = LLM(llama[0], **SMALL, tensor_parallel_size=2)
    yield llm
    llm.shutdown()


def test_llama_tp2_matches_tp1(llama, llama_tp2) -> None:
    assert llama_tp2.engine.parallel is not None and len(llama_tp2.engine.parallel.procs) == 1
    assert _greedy(llama_tp2) == llama[1]


def test_sleep_and_wake_keep_tp2_outputs(llama, llama_tp2) -> None:
    engine = llama_tp2.engine
    state = engine.sleep(2)
    # both ranks freed their shard: more than rank 0's own KV pool
    assert state.kv_bytes > engine.kv_cache_bytes and state.weight_bytes > 0
    engine.wake_up()
    assert not engine.is_sleeping
    assert _greedy(llama_tp2) == llama[1]
    engine.sleep(1)
    engine.wake_up(["kv_cache"])
    assert _greedy(llama_tp2) == llama[1]


def test_profile_writes_a_trace_per_rank(llama_tp2, tmp_path: Path) -> None:
    profiler = EngineProfiler()
    profiler.start(tmp_path)
    llama_tp2.generate(PROMPTS[:2], SamplingParams(max_tokens=2), use_tqdm=False)
    files = profiler.stop()
    names = sorted(f.name for f in files)
    assert len(files) == 2 and all(f.exists() for f in files), names
    assert any(".rank0." in n for n in names) and any(".rank1." in n for n in names)


def test_reset_prefix_cache_under_tp(llama, llama_tp2) -> None:
    """Block tables and prefix hashes live on rank 0: resetting there is enough; outputs stay exact."""
    assert _greedy(llama_tp2) == llama[1]
    assert llama_tp2.engine.reset_prefix_cache() > 0
    assert _greedy(llama_tp2) == llama[1]


@pytest.fixture
def alone() -> None:
    """One tensor-parallel engine per process at a time: stop the module's shared one, if running."""
    group = current_group()
    if group is not None:
        group.shutdown()


@pytest.mark.parametrize("kind", ["gemma2", "qwen3", "mixtral"])
def test_other_families_tp2_match_tp1(tmp_path: Path, alone, kind: str) -> None:
    path = _checkpoint(tmp_path, kind)
    reference = _greedy(LLM(path, **SMALL))
    with LLM(path, **SMALL, tensor_parallel_size=2) as llm:
        assert _greedy(llm) == reference
    assert current_group() is None


def test_pooling_model_tp2_matches_tp1(tmp_path: Path, alone) -> None:
    """Embeddings: rank 0 pools the (all-reduced, full) hidden states; heads stay replicated."""
    from transformers import AutoModel

    path = tmp_path / "bert"
    tiny_checkpoint(tiny_config("bert"), path, auto_class=AutoModel)
    save_tiny_tokenizer(path)
    texts = ["hello world", "a b c d e f", "tensor parallel"]
    reference = torch.tensor([o.outputs.embedding for o in LLM(str(path), **SMALL).embed(texts, use_tqdm=False)])
    with LLM(str(path), **SMALL, tensor_parallel_size=2) as llm:
        split = torch.tensor([o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)])
    torch.testing.assert_close(split, reference, atol=1e-5, rtol=0)


def test_torchrun_starts_every_rank(llama, tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 script.py``: rank 0's ``LLM`` is the engine, rank 1's serves as its
    worker (env:// rendezvous) and exits cleanly when rank 0 shuts down."""
    script = tmp_path / "offline.py"
    script.write_text(TORCHRUN_SCRIPT)
    out = tmp_path / "tokens.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), llama[0], str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert json.loads(out.read_text()) == llama[1][:2]


TORCHRUN_SCRIPT = f"""
import json, sys
from heron import LLM, SamplingParams

if __name__ == "__main__":
    llm = LLM(sys.argv[1], dtype="float32", num_kv_blocks=64, tensor_parallel_size=2)
    params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    outs = llm.generate({PROMPTS[:2]!r}, params, use_tqdm=False)
    json.dump([list(o.outputs[0].token_ids) for o in outs], open(sys.argv[2], "w"))
    llm.shutdown()
"""


def test_model_without_tensor_parallel_is_refused(llama) -> None:
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"TransformersForCausalLM.*does not support tensor parallelism"):
        LLM(llama[0], **SMALL, tensor_parallel_size=2, model_impl="transformers")
    assert time.monotonic() - start < 30  # refused before any worker starts
    assert current_group() is None


def test_lora_under_tensor_parallelism_matches_tp1(llama, alone, tmp_path: Path) -> None:
    """--enable-lora at tp=2: an adapter on every projection gives tp=1's greedy tokens, the base model
    next to it stays exact (tests/core/distributed/test_tp_lora.py checks mixes and runtime updates)."""
    from transformers import AutoModelForCausalLM

    from heron.lora import LoRARequest
    from tests.core.distributed.test_tp_lora import save_adapter

    adapter = LoRARequest("x", 1, save_adapter(AutoModelForCausalLM.from_pretrained(llama[0]), tmp_path / "x", 5))
    loras = [adapter, None] * (len(PROMPTS) // 2)
    lora = {**SMALL, "enable_lora": True, "max_lora_rank": 8}

    def run(llm: LLM) -> list[list[int]]:
        return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, GREEDY, lora_request=loras,
                                                                     use_tqdm=False)]

    reference = run(LLM(llama[0], **lora))
    assert reference[1::2] == llama[1][1::2] and reference[0] != llama[1][0]
    with LLM(llama[0], **lora, tensor_parallel_size=2) as llm:
        assert run(llm) == reference


def test_bad_layouts_are_refused(llama) -> None:
    with pytest.raises(ValueError, match="does not divide over --nnodes 2"):
        LLM(llama[0], dtype="float32", tensor_parallel_size=3, nnodes=2)
    with pytest.raises(ValueError, match="--node-rank 1 runs workers only"):
        LLM(llama[0], **SMALL, tensor_parallel_size=2, nnodes=2, node_rank=1)


@pytest.mark.parametrize("where", ["local", "remote"])
def test_killed_worker_fails_the_engine(llama, where: str) -> None:
    """A local worker's death is seen before the step; a remote one's (simulated: rank 0 does not
    watch the process) by the step's collectives, which fail instead of hanging."""
    llm = LLM(llama[0], **SMALL, tensor_parallel_size=2)
    try:
        (_, proc), = llm.engine.parallel.procs
        proc.kill()
        proc.join(10)
        if where == "remote":
            llm.engine.parallel.procs = []
        start = time.monotonic()
        with pytest.raises(TensorParallelError, match="worker rank 1 exited" if where == "local" else "failed"):
            llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        assert time.monotonic() - start < 10
        llm.engine.add_request("again", PROMPTS[0], GREEDY)
        with pytest.raises(TensorParallelError):  # and it stays failed
            llm.engine.step()
    finally:
        llm.shutdown()
    assert current_group() is None


def test_workers_stop_with_the_engine(llama) -> None:
    llm = LLM(llama[0], **SMALL, tensor_parallel_size=2)
    (_, proc), = llm.engine.parallel.procs
    llm.shutdown()
    assert proc.exitcode == 0
    llm.shutdown()  # idempotent
