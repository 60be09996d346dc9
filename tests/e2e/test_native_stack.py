"""The Llama decoder stack run in one C++ call gives the Python modules' bits, and stands aside where it must.

On the default model (gguf linears, cpu_paged attention, fused ops) every step's layers run through
:class:`heron_plugins.models.native_stack.NativeStack`; ``HERON_NATIVE_STACK=0`` runs the modules.
The workload mixes what a step can hold: prompt chunks beside decodes (the gguf kernel's tile unit),
ten sequences decoding together (tile unit), single decodes (row path), and prefix-cache remainders.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heron import SamplingParams
from heron_plugins.models.native_stack import ENV, NativeStack
from tests.e2e.conftest import have_default_model

pytestmark = pytest.mark.slow


def _workload(llm) -> list[tuple[list[int], list[list[tuple[int, float]]]]]:
    """Greedy tokens and top-2 logprobs of 10 prompts (lengths 9..63) run together, then two repeats
    of the longest (prefix-cache hits), then one alone; from an empty prefix cache, so both runs cut
    their steps alike."""
    assert llm.engine.reset_prefix_cache() >= 0
    params = SamplingParams(temperature=0, max_tokens=14, ignore_eos=True, logprobs=2)
    prompts = [{"prompt_token_ids": list(range(300 + 13 * i, 309 + 19 * i))} for i in range(10)]
    outs = llm.generate(prompts, params, use_tqdm=False)
    outs += llm.generate(prompts[-1:] * 2, params, use_tqdm=False)
    outs += llm.generate(prompts[3:4], params, use_tqdm=False)
    assert outs[10].num_cached_tokens > 0
    return [(list(o.outputs[0].token_ids),
             [[(k, v.logprob) for k, v in sorted(lp.items())] for lp in o.outputs[0].logprobs]) for o in outs]


def _model(llm) -> nn.Module:
    return llm.engine.model.model  # LlamaModel


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the steps whose layers the native stack ran."""
    calls = [0]
    run = NativeStack.run

    def counting(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        calls[0] += out is not None
        return out

    monkeypatch.setattr(NativeStack, "run", counting)
    return calls


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_stack_gives_the_modules_bits(dtype: str, counted: list[int], monkeypatch: pytest.MonkeyPatch):
    have_default_model()
    from heron import LLM

    llm = LLM(dtype=dtype, max_num_seqs=16, num_kv_blocks=256, max_num_batched_tokens=48)
    assert llm.engine.linear_kernel == "gguf" and llm.engine.backend.name == "cpu_paged"
    native = _workload(llm)
    assert isinstance(_model(llm).__dict__["_native"], NativeStack)
    steps = counted[0]
    assert steps > 40  # every step of the workload
    monkeypatch.setenv(ENV, "0")
    _model(llm).__dict__.pop("_native")
    modules = _workload(llm)
    assert _model(llm).__dict__["_native"] is False and counted[0] == steps
    assert native == modules


def test_the_stack_stands_aside_for_other_kernels(counted: list[int], monkeypatch: pytest.MonkeyPatch):
    have_default_model()
    from heron import LLM

    params = SamplingParams(temperature=0, max_tokens=3)
    prompt = [{"prompt_token_ids": list(range(400, 420))}]
    for kwargs in ({"attention_backend": "torch_sdpa"}, {"linear_kernel": "dense"}):
        llm = LLM(max_num_seqs=2, num_kv_blocks=64, **kwargs)
        assert len(llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids) == 3
        assert _model(llm).__dict__["_native"] is False, kwargs
        del llm
    monkeypatch.setenv(ENV, "0")
    llm = LLM(max_num_seqs=2, num_kv_blocks=64)
    llm.generate(prompt, params, use_tqdm=False)
    assert _model(llm).__dict__["_native"] is False
    assert counted[0] == 0


class _Wrapped(nn.Module):
    """A projection wrapper as LoRA puts one in place: calls the module it wraps, counts, and forwards
    attribute reads it lacks to it (``native_linear`` included, which must not count as its own)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["inner"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_a_replaced_projection_sends_the_layers_back_to_the_modules(counted: list[int]):
    have_default_model()
    from heron import LLM

    llm = LLM(max_num_seqs=2, num_kv_blocks=64)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    prompt = [{"prompt_token_ids": list(range(500, 520))}]
    before = llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids
    assert counted[0] == 4 and isinstance(_model(llm).__dict__["_native"], NativeStack)
    attn = _model(llm).layers[7].self_attn
    attn.o_proj = wrapper = _Wrapped(attn.o_proj)
    assert wrapper.native_linear() is not None  # read through to the wrapped GGUFLinear
    after = llm.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids
    assert wrapper.calls == 4 and counted[0] == 4  # every step on the modules, through the wrapper
    assert _model(llm).__dict__["_native"] is False
    assert after == before
