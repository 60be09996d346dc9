"""Read a single-file GGUF checkpoint: metadata, and HF-named float tensors.

Tensors are dequantized with ``gguf.quants.dequantize`` and renamed from llama.cpp's names
(``blk.N.attn_q``) to transformers' (``model.layers.N.self_attn.q_proj``). llama.cpp's
converter permutes the rows of the q and k projections of ``llama`` checkpoints (to pair rotary
channels as interleaved); :func:`unpermute_qk` undoes it the way transformers' GGUF loader
does, so a heron model matches transformers loading the same file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ("GGUFFile", "gguf_to_hf_name", "unpermute_qk")

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
#: tensors heron recomputes instead of loading
_SKIPPED = {"rope_freqs"}
#: GGUF architectures whose q/k rows llama.cpp permuted
_PERMUTED_ARCHS = {"llama"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def gguf_to_hf_name(name: str) -> str | None:
    """The transformers name of GGUF tensor ``name``; None for tensors heron skips; unknown
    names come back unchanged (the model's ``load_weights`` then says which one it lacks)."""
    m = _LAYER_RE.match(name)
    if m:
        layer, part, kind = m.groups()
        hf = _LAYER_NAMES.get(part)
        return f"model.layers.{layer}.{hf}.{kind}" if hf else name
    base, _, kind = name.rpartition(".")
    if base in _SKIPPED:
        return None
    return f"{_GLOBAL_NAMES[base]}.{kind}" if base in _GLOBAL_NAMES else name


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation.

    llama.cpp stored each head's rows as ``reshape(heads, 2, half, ...).swapaxes(1, 2)``; this
    applies the inverse. ``weight``: [heads * head_size, ...] (a weight matrix or a bias).
    """
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


class GGUFFile:
    """One GGUF file opened with ``gguf.GGUFReader`` (memory-mapped, parsed once).

    Args:
        path: the ``.gguf`` file.
    """

    def __init__(self, path: str) -> None:
        from gguf import GGUFReader

        self.path = path
        self.reader = GGUFReader(path)

    def field(self, key: str, default: Any = None) -> Any:
        """A scalar or string metadata value (e.g. ``general.architecture``), or ``default``."""
        f = self.reader.fields.get(key)
        if f is None:
            return default
        value = f.contents()
        return value if value is not None else default

    @property
    def architecture(self) -> str:
        return str(self.field("general.architecture", ""))

    def num_tensors(self) -> int:
        return len(self.reader.tensors)

    def tensors(self, num_heads: int, num_kv_heads: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Dequantized float32 tensors with transformers names, q/k un-permuted where needed."""
        from gguf.quants import dequantize

        permuted = self.architecture in _PERMUTED_ARCHS
        for t in self.reader.tensors:
            name = gguf_to_hf_name(t.name)
            if name is None:
                continue
            array = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            if not array.flags.writeable:  # an f32 tensor comes back as a view of the mmap
                array = array.copy()
            tensor = torch.from_numpy(array)
            if permuted and ".self_attn.q_proj." in name:
                tensor = unpermute_qk(tensor, num_heads)
            elif permuted and ".self_attn.k_proj." in name:
                tensor = unpermute_qk(tensor, num_kv_heads)
            yield name, tensor
