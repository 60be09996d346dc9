"""Every registered attention backend computes paged attention like a dense reference.

Parametrized over the ``heron.attention_backends`` group, so a new backend is checked the
moment it is installed (it is skipped only for features its ``supports`` declines).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from heron.plugins import registry
from tests.helpers_model import make_batch

NAMES = registry("attention_backends").names()
H, HKV, D, BS = 4, 2, 8, 4


def dense_reference(q, keys, values, q_start, window, soft_cap, causal=True):
    """q: [Q, H, D] at positions q_start.., keys/values: [S, HKV, D] -> [Q, H, D].

    Non-causal: every query attends to all S keys (its whole request).
    """
    keys = keys.repeat_interleave(H // HKV, dim=1)
    values = values.repeat_interleave(H // HKV, dim=1)
    out = torch.empty_like(q)
    for i in range(q.shape[0]):
        pos = q_start + i
        end = pos + 1 if causal else keys.shape[0]
        for h in range(H):
            scores = (keys[:end, h] @ q[i, h]) / math.sqrt(D)
            if soft_cap:
                scores = soft_cap * torch.tanh(scores / soft_cap)
            if window:
                scores[: max(0, pos + 1 - window)] = float("-inf")
            out[i, h] = torch.softmax(scores, 0) @ values[:end, h]
    return out


def layer(window=None, soft_cap=None, causal=None):
    info = SimpleNamespace(layer_idx=0, num_heads=H, num_kv_heads=HKV, head_size=D, scale=D**-0.5,
                           sliding_window=window, logits_soft_cap=soft_cap)
    if causal is not None:  # absent: a layer written before the attribute existed (causal)
        info.causal = causal
    return info


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("window", "soft_cap"), [(None, None), (3, None), (None, 5.0)])
@pytest.mark.parametrize(("prior", "new"), [([6, 3, 0], [1, 1, 9]), ([6, 3, 4], [1, 1, 1])], ids=["mixed", "decodes"])
def test_paged_batch_matches_dense_reference(name, window, soft_cap, prior, new):
    cls = registry("attention_backends").load(name)
    why_not = cls.supports(torch.device("cpu"), torch.float32, D, window, logits_soft_cap=soft_cap)
    if why_not is not None:
        pytest.skip(why_not)
    torch.manual_seed(0)
    out, want = run_two_steps(cls, layer(window, soft_cap), prior, new)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("prior", "new"), [([0, 0, 0], [5, 1, 9]), ([6, 3, 0], [2, 1, 9]), ([6, 3, 4], [1, 1, 1])],
                         ids=["prompts", "mixed", "decodes"])
def test_non_causal_matches_dense_reference(name, prior, new):
    # encoders: each new token attends to every position of its own request, later ones included
    cls = registry("attention_backends").load(name)
    why_not = cls.supports(torch.device("cpu"), torch.float32, D, non_causal=True)
    if why_not is not None:
        pytest.skip(why_not)
    torch.manual_seed(0)
    out, want = run_two_steps(cls, layer(causal=False), prior, new)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def run_two_steps(cls, info, prior, new):
    """Cache ``prior`` tokens per request, then run ``new`` ones in one step: (output, dense reference)."""
    backend, window, soft_cap = cls(), info.sliding_window, info.logits_soft_cap
    cache = torch.zeros(cls.kv_cache_shape(16, BS, HKV, D))
    tables = [[5, 2, 9], [0, 7], [3, 11, 1]]
    # mixed: two decodes after a cached prefix and one fresh prefill; decodes: three decodes
    total = [p + n for p, n in zip(prior, new, strict=True)]
    keys = [torch.randn(t, HKV, D) for t in total]
    values = [torch.randn(t, HKV, D) for t in total]
    queries = [torch.randn(n, H, D) for n in new]
    # step 1 writes the cached prefixes (their outputs are not checked)
    first = [(i, p) for i, p in enumerate(prior) if p]

    def prefixes(xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x[:p] for x, p in zip(xs, prior, strict=True) if p])

    if first:
        batch = make_batch([p for _, p in first], [p for _, p in first], [tables[i] for i, _ in first], BS)
        batch.attn_metadata = backend.build_batch(batch)
        backend.forward(torch.randn(batch.num_tokens, H, D), prefixes(keys), prefixes(values), cache,
                        batch.attn_metadata, info)
    # step 2: the mixed batch
    batch = make_batch(new, total, tables, BS)
    batch.attn_metadata = backend.build_batch(batch)
    out = backend.forward(
        torch.cat(queries),
        torch.cat([k[p:] for k, p in zip(keys, prior, strict=True)]),
        torch.cat([v[p:] for v, p in zip(values, prior, strict=True)]),
        cache,
        batch.attn_metadata,
        info,
    )
    assert out.shape == (sum(new), H, D)
    causal = getattr(info, "causal", True)
    return out, torch.cat([dense_reference(queries[i], keys[i], values[i], prior[i], window, soft_cap, causal)
                           for i in range(3)])


@pytest.mark.parametrize("name", NAMES)
def test_supports_and_cache_shape(name):
    cls = registry("attention_backends").load(name)
    assert cls.name == name
    for dtype in (torch.float32, torch.int8):
        assert isinstance(cls.supports(torch.device("cpu"), dtype, 64), str | None)
    shape = cls.kv_cache_shape(10, 16, 2, 64)
    assert math.prod(shape) >= 2 * 10 * 16 * 2 * 64  # room for every token's key and value


def test_builtin_supports_reasons():
    eager = registry("attention_backends").load("eager")
    sdpa = registry("attention_backends").load("torch_sdpa")
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert eager.supports(cpu, dtype, 64, 4096) is None
        assert sdpa.supports(cpu, dtype, 64, 4096) is None
    assert sdpa.supports(cpu, torch.float32, 64, logits_soft_cap=30.0) is None
    assert eager.supports(cpu, torch.float32, 64, logits_soft_cap=30.0) is None
    assert sdpa.supports(cpu, torch.float32, 64, head_sizes=(64, 128)) is None
    assert sdpa.supports(cpu, torch.float32, 64, non_causal=True) is None
    assert eager.supports(cpu, torch.float32, 64, non_causal=True) is None
    assert "floating point" in eager.supports(cpu, torch.int8, 64)
    assert "alibi" in sdpa.supports(cpu, torch.float32, 64, alibi=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("window", "causal"), [(None, True), (3, True), (None, False)])
def test_single_fresh_prefill(name, window, causal):
    cls = registry("attention_backends").load(name)
    if cls.supports(torch.device("cpu"), torch.float32, D, window, non_causal=not causal) is not None:
        pytest.skip("unsupported")
    torch.manual_seed(1)
    backend, n = cls(), 7
    cache = torch.zeros(cls.kv_cache_shape(8, BS, HKV, D))
    q, k, v = torch.randn(n, H, D), torch.randn(n, HKV, D), torch.randn(n, HKV, D)
    batch = make_batch([n], [n], [[6, 1]], BS)
    batch.attn_metadata = backend.build_batch(batch)
    out = backend.forward(q, k, v, cache, batch.attn_metadata, layer(window, causal=causal))
    torch.testing.assert_close(out, dense_reference(q, k, v, 0, window, None, causal), atol=1e-5, rtol=1e-5)
