"""``auto`` follows the priorities plugins declare: core names no kernel, ties break by name, and a
third-party plugin that displaces a built-in one says so in the log."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from heron.interfaces import AttentionBackend, LinearKernel
from heron.layers import (
    UnsupportedBackendError,
    backend_preference,
    select_attention_backend,
    select_linear_kernel,
)
from heron.plugins import registry

ROOT = Path(__file__).resolve().parents[3]


def _backend(label: str, priority: int | None, dtypes: tuple[torch.dtype, ...] | None = None) -> type[AttentionBackend]:
    """A fake backend: supports ``dtypes`` (every dtype when None)."""

    class Fake(AttentionBackend):
        name = label

        @classmethod
        def supports(cls, device, dtype, head_size, sliding_window=None, **features: Any) -> str | None:
            return None if dtypes is None or dtype in dtypes else f"{label} does not do {dtype}"

        @classmethod
        def kv_cache_shape(cls, num_blocks, block_size, num_kv_heads, head_size):
            return (2, num_blocks, block_size, num_kv_heads, head_size)

        def build_batch(self, batch):
            return batch

        def forward(self, q, k, v, kv_cache, metadata, layer):
            return q

    Fake.priority = priority
    return Fake


def _kernel(label: str, priority: int | None, exact: bool = True) -> type[LinearKernel]:
    class Fake(LinearKernel):
        name = label

        @classmethod
        def supports(cls, device, dtype):
            return None

        def convert(self, linear, name):
            return linear

    Fake.priority, Fake.exact = priority, exact
    return Fake


@pytest.fixture
def register():
    undo = []

    def add(kind: str, cls: type) -> type:
        undo.append(registry(kind).register(cls.name, cls))
        return cls

    yield add
    for u in undo:
        u()


def test_built_ins_declare_their_priorities():
    backends = registry("attention_backends")
    prio = {n: backends.load(n).priority for n in ("cpu_paged", "torch_sdpa", "eager")}
    assert prio["cpu_paged"] > prio["torch_sdpa"] > prio["eager"]
    kernels = registry("linear_kernels")
    assert kernels.load("onednn").priority > kernels.load("dense").priority
    assert kernels.load("int4").priority is None and not kernels.load("int4").exact
    assert all(backends.is_builtin(n) for n in prio) and kernels.is_builtin("int4")


def test_core_names_no_built_in_kernel():
    names = set(registry("attention_backends").names()) | set(registry("linear_kernels").names())
    # "gguf" is also a checkpoint format (``Checkpoint.stored_format``, ``--quantization gguf``) that
    # core names on its own account; the kernel that computes on it is chosen by that format, not by name
    names -= {"gguf"}
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # transformers' own attention implementations share names with heron's backends
        hf_values = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "attn_implementation"}
        for node in ast.walk(tree):
            if id(node) in hf_values:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


def test_a_third_party_backend_that_wins_says_which_built_in_it_replaced(register, caplog):
    register("attention_backends", _backend("turbo_attn", 1000))
    with caplog.at_level(logging.WARNING):
        cls, why = select_attention_backend("auto", "cpu", torch.float32, 64, None)
    assert cls.name == "turbo_attn"
    note = ("third-party attention backend 'turbo_attn' (priority 1000, from registered in-process) replaces the "
            "built-in 'cpu_paged' (priority 200, built-in) under auto")
    assert note in why and note in caplog.text
    # the replaced built-in is the one that would have served: torch_sdpa for float16
    cls, why = select_attention_backend("auto", "cpu", torch.float16, 64, None)
    assert cls.name == "turbo_attn" and "replaces the built-in 'torch_sdpa'" in why


def test_a_third_party_backend_that_does_not_fit_leaves_the_built_ins(register, caplog):
    register("attention_backends", _backend("bf16_only", 1000, (torch.bfloat16,)))
    cls, why = select_attention_backend("auto", "cpu", torch.float32, 64, None)
    assert cls.name == "cpu_paged" and "bf16_only: bf16_only does not do torch.float32" in why
    assert "replaces" not in why and "replaces" not in caplog.text


def test_a_low_priority_backend_serves_only_what_the_built_ins_cannot(register):
    register("attention_backends", _backend("int8_attn", -5, (torch.int8,)))
    assert backend_preference()[-1] == "int8_attn"
    cls, why = select_attention_backend("auto", "cpu", torch.float32, 64, None)
    assert cls.name == "cpu_paged"
    cls, why = select_attention_backend("auto", "cpu", torch.int8, 64, None)
    assert cls.name == "int8_attn" and "replaces" not in why  # no built-in supports int8


@pytest.mark.parametrize("order", [("zeta_fast", "alpha_fast"), ("alpha_fast", "zeta_fast")])
def test_equal_priorities_break_ties_by_name_whatever_the_registration_order(register, order):
    for label in order:
        register("attention_backends", _backend(label, 5000))
    assert backend_preference()[:2] == ["alpha_fast", "zeta_fast"]
    cls, _ = select_attention_backend("auto", "cpu", torch.float32, 64, None)
    assert cls.name == "alpha_fast"


def test_a_backend_without_priority_runs_only_when_named(register):
    register("attention_backends", _backend("named_only", None))
    assert "named_only" not in backend_preference()
    cls, _ = select_attention_backend("auto", "cpu", torch.float32, 64, None)
    assert cls.name != "named_only"
    cls, why = select_attention_backend("named_only", "cpu", torch.float32, 64, None)
    assert cls.name == "named_only" and "was requested" in why
    with pytest.raises(UnsupportedBackendError, match="not tried by auto .no declared priority.: named_only"):
        select_attention_backend("auto", "cpu", torch.int8, 64, None)


def test_a_priority_that_is_not_an_int_is_refused():
    with pytest.raises(TypeError, match="priority is 'high'; declare an int"):
        registry("attention_backends").register("stringly", _backend("stringly", "high"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority is True"):
        registry("linear_kernels").register("boolish", _kernel("boolish", True))


def test_linear_auto_follows_priority_and_exactness(register, caplog):
    register("linear_kernels", _kernel("lossy_fast", 9000, exact=False))
    register("linear_kernels", _kernel("exact_fast", 500))
    with caplog.at_level(logging.WARNING):
        cls, why = select_linear_kernel("auto", "cpu", torch.float32)
    assert cls.name == "exact_fast"
    assert "lossy_fast: not exact" in why
    assert "replaces the built-in 'dense' (priority 0, built-in)" in why and "replaces the built-in 'dense'" in caplog.text
    cls, why = select_linear_kernel("lossy_fast", "cpu", torch.float32)  # quantizing kernels run when named
    assert cls.name == "lossy_fast"


def test_linear_ties_break_by_name_and_int4_is_never_automatic(register):
    register("linear_kernels", _kernel("b_tied", 700))
    register("linear_kernels", _kernel("a_tied", 700))
    cls, _ = select_linear_kernel("auto", "cpu", torch.bfloat16)
    assert cls.name == "a_tied"
    for dtype in (torch.float32, torch.bfloat16):
        assert select_linear_kernel("auto", "cpu", dtype)[0].name != "int4"
