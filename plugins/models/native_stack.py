"""The Llama decoder stack run in one C++ call (``csrc/llama_stack.cpp``), when its kernels allow it.

A small model's decode step is a few hundred small calls per token; each Python module call and
torch dispatch costs tens of microseconds on a CPU, which for the bundled 135M model was about
half of a batch-1 step. When every layer is the plain Llama layer and every kernel it uses has a
C++ entry point, :class:`NativeStack` runs all the decoder layers in one call that invokes the same
kernels with the same arguments in the same order (the linear kernel's ``native_linear``, the
attention backend's ``native_attention``, :func:`heron.layers.fused_ops.native_addresses`, and
ATen's SiLU, product and add), so a step's outputs are the same bits as the Python modules'.

It stands aside (the Python modules run, as before) for anything else: a layer subclass (q/k
norms, other MLPs), a projection without a C++ entry (dense or int4 weights, a bias, LoRA
wrappers, tensor-parallel collectives), a backend without one, the fused ops off
(``HERON_FUSED_OPS=0``), autograd, or ``HERON_NATIVE_STACK=0``. The check runs at the first forward
(a model it does not fit stays on the modules), and each step checks that the layers still hold the
modules the stack was built from (LoRA wraps projections when an adapter first arrives: the layers
go back to the modules for good). Weights and KV caches are read from the modules at every call, so the
stack keeps nothing alive and never holds a freed tensor (sleep mode releases and reloads them).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from heron.interfaces import ForwardBatch
from heron.layers import RMSNorm, RotaryTables
from heron.layers.activation import GatedMLP, SiluAndMul
from heron.layers.fused_ops import native_addresses
from heron.layers.native_build import NativeExtension

__all__ = ("ENV", "NativeStack", "load_extension")

log = logging.getLogger(__name__)

#: ``HERON_NATIVE_STACK=0`` keeps every step on the Python modules (benchmarks, comparisons)
ENV = "HERON_NATIVE_STACK"
_SOURCE = Path(__file__).parent / "csrc" / "llama_stack.cpp"
_CFLAGS = ["-O3"]
_DTYPES = (torch.float32, torch.bfloat16)

_EXT = NativeExtension(lambda: f"heron_llama_stack_{hashlib.sha1(_SOURCE.read_bytes()).hexdigest()[:10]}", [_SOURCE],
                       _CFLAGS)


def load_extension() -> ModuleType:
    """The compiled stack (built on first use, cached per machine by torch); a failed build is re-raised."""
    return _EXT.load()


class NativeStack:
    """The decoder layers of a Llama-family model as one C++ call; build it with :meth:`for_layers`."""

    def __init__(self, stack: Any, tensors: list[tuple[dict[str, Any], str]],
                 modules: list[tuple[dict[str, Any], str, nn.Module]]) -> None:
        self.stack = stack
        self._tensors = tensors  # (dict, key) of each tensor a call reads, in the stack's slot order
        self._modules = modules  # (parent's _modules, name, the module the stack was built from)

    @classmethod
    def for_layers(cls, layers: nn.ModuleList, layer_cls: type[nn.Module], attention_cls: type[nn.Module],
                   dtype: torch.dtype) -> NativeStack | None:
        """The stack for ``layers`` when each is exactly ``layer_cls`` with ``attention_cls`` and every kernel
        has a C++ entry; None (logged once at debug level) otherwise."""
        why = cls._why_not(layers, layer_cls, attention_cls, dtype)
        if why is None:
            try:
                return cls._build(layers, dtype)
            except Exception as err:  # noqa: BLE001 - no compiler, a failed build: the Python modules run
                why = f"its C++ stack did not build ({next(iter(str(err).strip().splitlines()), type(err).__name__)})"
        log.debug("the decoder layers run as Python modules: %s", why)
        return None

    @staticmethod
    def _why_not(layers: nn.ModuleList, layer_cls: type[nn.Module], attention_cls: type[nn.Module],
                 dtype: torch.dtype) -> str | None:
        if os.environ.get(ENV, "1") == "0":
            return f"{ENV}=0"
        if dtype not in _DTYPES:
            return f"the stack runs float32 or bfloat16 models, not {dtype}"
        if native_addresses() is None:
            return "the fused C++ ops are off or did not build"
        for layer in layers:
            attn = getattr(layer, "self_attn", None)
            if type(layer) is not layer_cls or type(attn) is not attention_cls or not attn.use_rope:
                return f"layer {type(layer).__name__} is not a plain {layer_cls.__name__}"
            mlp = layer.mlp
            if type(mlp) is not GatedMLP or type(mlp.act_fn) is not SiluAndMul:
                return f"the MLP {type(mlp).__name__} is not a SiLU GatedMLP"
            if type(layer.input_layernorm) is not RMSNorm or type(layer.post_attention_layernorm) is not RMSNorm:
                return "a norm is not an RMSNorm"
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                if norm.weight.dtype != dtype:
                    return f"a norm weight is {norm.weight.dtype}, not {dtype}"
            cache = attn.attn.kv_cache
            if cache is None or cache.dtype != dtype or not cache.is_contiguous():
                return "a KV cache is unbound, not contiguous or not in the model dtype"
            native = getattr(type(attn.attn.backend), "native_attention", None)
            if native is None or native(attn.attn.backend, attn.attn, dtype) is None:
                return f"attention backend {getattr(attn.attn.backend, 'name', '?')} has no C++ entry for this layer"
            for proj in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
                # the class must define it: a wrapper (LoRA's) may forward attribute reads to the module it wraps
                entry = getattr(type(proj), "native_linear", None)
                if entry is None or entry(proj) is None:
                    return f"projection {type(proj).__name__} has no C++ entry"
        return None

    @classmethod
    def _build(cls, layers: nn.ModuleList, dtype: torch.dtype) -> NativeStack:
        linears, shapes, floats, tensors, modules = [], [], [], [], []
        attend = None
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            attend = attn.attn.backend.native_attention(attn.attn, dtype)
            row: list[int] = []
            slots: dict[str, tuple[dict[str, Any], str]] = {}
            for slot, parent, name in (("qkv", attn, "qkv_proj"), ("o", attn, "o_proj"),
                                       ("gate_up", mlp, "gate_up_proj"), ("down", mlp, "down_proj")):
                proj = parent._modules[name]
                address, table, key, arg = proj.native_linear()
                row += [address, arg]
                slots[slot] = (table, key)
                modules.append((parent._modules, name, proj))
            for parent, name in ((layer._modules, "self_attn"), (layer._modules, "mlp"),
                                 (attn._modules, "attn"), (layer._modules, "input_layernorm"),
                                 (layer._modules, "post_attention_layernorm")):
                modules.append((parent, name, parent[name]))
            linears.append(row)
            shapes.append([attn.num_heads, attn.num_kv_heads, attn.head_size, mlp.gate_up_proj.out_features // 2,
                           attn.attn.sliding_window or 0])
            floats.append([float(attn.attn.scale), float(layer.input_layernorm.eps),
                           float(layer.post_attention_layernorm.eps)])
            # the stack's slot order: input norm, qkv, o, post norm, gate_up, down, KV cache
            tensors += [(layer.input_layernorm._parameters, "weight"), slots["qkv"], slots["o"],
                        (layer.post_attention_layernorm._parameters, "weight"), slots["gate_up"], slots["down"],
                        (attn.attn.__dict__, "kv_cache")]
        stack = load_extension().LlamaStack(linears, shapes, floats, attend, list(native_addresses()))
        return cls(stack, tensors, modules)

    def current(self) -> bool:
        """Whether the layers still hold the modules the stack was built from."""
        return all(table.get(name) is module for table, name, module in self._modules)

    def run(self, hidden: torch.Tensor, rope: RotaryTables, batch: ForwardBatch) -> torch.Tensor | None:
        """The decoder layers' output for ``hidden`` [T, H], or None when this step is not for the stack
        (autograd, another dtype or device, metadata from another backend)."""
        md = batch.attn_metadata
        seq_lens, q_start = getattr(md, "seq_lens", None), getattr(md, "q_start", None)
        if seq_lens is None or q_start is None or torch.is_grad_enabled() or not hidden.is_cpu:
            return None
        tensors = [table[key] for table, key in self._tensors]
        if tensors[0].dtype != hidden.dtype or any(t is None for t in tensors):
            return None
        has_prompt = 1 if batch.num_prompt_tokens else 0
        return self.stack.forward(hidden, tensors, rope.cos, rope.sin, md.slot_mapping, md.kv_slots, seq_lens,
                                  q_start, has_prompt)
