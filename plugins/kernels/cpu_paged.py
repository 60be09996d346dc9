"""A CPU attention backend that attends in place from the paged KV cache.

``torch_sdpa`` gathers every request's K/V history with ``index_select`` in every layer of every
step, and that copy is a large share of a batched decode step. Here every causal layer goes to a
C++ kernel (``csrc/paged_attention.cpp``) that walks each request's cache slots directly, with
float32 scores and softmax and no copy of the histories. Each query row at position ``p`` is
computed on its own terms (keys ``0 .. p`` in a fixed order), whatever else is in the step: a
prompt gives the same numbers computed whole, in chunks or as the remainder after a prefix-cache
hit, and a verified speculative draft the same as decoding it one token at a time. A prompt's
rows are tiled so they share each key block they read. Everything else (cache layout, batch
indexes, soft-capped and bidirectional encoder layers) is ``torch_sdpa``'s.

The kernel is compiled with ``torch.utils.cpp_extension`` on first use (``-O3 -march=native``),
once per machine: later processes load it from torch's extension cache (~/.cache/torch_extensions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from heron.interfaces import AttentionLayerInfo, ForwardBatch
from heron.layers.native_build import NativeExtension, cpu_flags_digest
from heron_plugins.kernels.torch_sdpa import SDPAMetadata, TorchSDPABackend

__all__ = ("CpuPagedBackend", "PagedMetadata", "load_extension")

_SOURCE = Path(__file__).parent / "csrc" / "paged_attention.cpp"
#: cache dtypes the kernel reads
_KERNEL_DTYPES = (torch.float32, torch.bfloat16)
#: the kernel fixes its summation orders itself (explicit vector code): the compiler may neither
#: reassociate nor contract them
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]

_EXT = NativeExtension(lambda: f"heron_paged_attention_{cpu_flags_digest()}", [_SOURCE], _CFLAGS, openmp=True)


def load_extension() -> ModuleType:
    """The compiled kernel module, built on the first call (a failed build is re-raised: see
    :class:`heron.layers.native_build.NativeExtension`)."""
    return _EXT.load()


@dataclass(slots=True, kw_only=True)
class PagedMetadata(SDPAMetadata):
    """``torch_sdpa``'s per-step indexes plus what the kernel reads."""

    seq_lens: torch.Tensor  # [R] int64 keys of each request once this step's tokens are stored
    q_start: torch.Tensor  # [R + 1] int64 first token row of each request (query_start_loc)


class CpuPagedBackend(TorchSDPABackend):
    """``torch_sdpa`` with a C++ kernel that attends every causal layer in place from the paged cache."""

    name = "cpu_paged"
    priority = 200  # auto's first choice where its C++ kernel builds and the dtype fits

    @classmethod
    def supports(
        cls,
        device: torch.device,
        dtype: torch.dtype,
        head_size: int,
        sliding_window: int | None = None,
        **features: Any,
    ) -> str | None:
        # The cheap checks go first: the build (a minute or two, once per machine) is tried
        # only for a model this backend could otherwise serve.
        why_not = super().supports(device, dtype, head_size, sliding_window, **features)
        if why_not is not None:
            return why_not
        if device.type != "cpu":
            return f"{cls.name} runs on CPU only, not {device.type}"
        if dtype not in _KERNEL_DTYPES:
            return f"{cls.name}'s kernel reads float32 or bfloat16 caches, not {dtype}"
        try:
            load_extension()
        except Exception as err:
            first_line = next(iter(str(err).strip().splitlines()), type(err).__name__)
            return f"{cls.name} could not build its C++ kernel: {first_line}"
        return None

    def build_batch(self, batch: ForwardBatch) -> PagedMetadata:
        md = super().build_batch(batch)
        device = md.kv_slots.device
        return PagedMetadata(**{f.name: getattr(md, f.name) for f in fields(md)},
                             seq_lens=batch.seq_lens_tensor.to(device=device, dtype=torch.int64),
                             q_start=batch.query_start_loc.to(device=device, dtype=torch.int64))

    def native_attention(self, layer: AttentionLayerInfo, dtype: torch.dtype) -> int | None:
        """For callers that run a layer stack in C++: the address of the kernel's ``paged_write_attention(q, k,
        v, kv_cache, slot_mapping, slots, seq_lens, q_start, scale, window)`` (the C++ signature; the metadata
        from :meth:`build_batch`), which :meth:`forward` calls for ``layer`` when q, k, v and the cache are all
        ``dtype``; None for layers it sends elsewhere (soft-capped or bidirectional)."""
        if layer.logits_soft_cap or not getattr(layer, "causal", True) or dtype not in _KERNEL_DTYPES:
            return None
        return int(load_extension().write_attention_address())

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: PagedMetadata,
        layer: AttentionLayerInfo,
    ) -> torch.Tensor:
        md = metadata
        # the C++ kernel neither caps scores nor knows of bidirectional layers
        if layer.logits_soft_cap or not getattr(layer, "causal", True):
            return super().forward(q, k, v, kv_cache, md, layer)
        ext = _EXT.module or load_extension()
        window = layer.sliding_window or 0
        if q.dtype == k.dtype == v.dtype == kv_cache.dtype and k.stride(-1) == 1 and v.stride(-1) == 1:
            # the usual case (a model in its cache's dtype): store and attend in one call
            return ext.paged_write_attention(q, k, v, kv_cache, md.slot_mapping, md.kv_slots, md.seq_lens,
                                             md.q_start, layer.scale, window)
        cache = self.write_kv(kv_cache, k, v, md.slot_mapping)  # [2, Hkv, num_slots, D]
        out = ext.paged_attention(q.to(cache.dtype), cache[0], cache[1], md.kv_slots, md.seq_lens, md.q_start,
                                  layer.scale, window)  # [T, H, D]
        return out.to(q.dtype)
