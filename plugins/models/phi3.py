"""Phi-3 (and Phi-3.5 / Phi-4-mini) decoder: Llama's layers with pre-fused checkpoint tensors.

Phi-3 checkpoints already store ``qkv_proj`` (``[q | k | v]`` rows) and ``gate_up_proj``
(``[gate | up]`` rows) fused, in the layout heron's Llama layers use; ``load_weights`` splits them
into the HF per-projection names Llama's loader expects. Rope may be ``longrope`` (short/long
factors chosen per request by its length) and partial (``partial_rotary_factor``); a
``sliding_window`` applies to every layer when set; both are read off the config by the layers.
Under tensor parallelism each fused tensor is split into its parts first, so every part is
sliced to this rank's heads (or MLP rows) by the layer's ``weight_loader`` like Llama's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from heron_plugins.models.llama import LlamaForCausalLM

__all__ = ("Phi3ForCausalLM",)


class Phi3ForCausalLM(LlamaForCausalLM):
    """Phi-3 causal LM (``model_type`` ``phi3``)."""

    supports_tensor_parallel = True

    def _split_fused(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """``qkv_proj`` -> q/k/v_proj, ``gate_up_proj`` -> gate/up_proj (rows); other tensors pass."""
        for name, tensor in weights:
            if ".qkv_proj." in name:
                # the checkpoint's full widths (not this rank's): each part is then sliced per rank
                qkv_proj = self.model.layers[int(name.split(".")[2])].self_attn.qkv_proj
                q, k, v = tensor.split(qkv_proj.full_sizes)
                yield from ((name.replace(".qkv_proj.", f".{p}_proj."), t) for p, t in zip("qkv", (q, k, v), strict=True))
            elif ".gate_up_proj." in name:
                gate, up = tensor.chunk(2)
                yield name.replace(".gate_up_proj.", ".gate_proj."), gate
                yield name.replace(".gate_up_proj.", ".up_proj."), up
            else:
                yield name, tensor

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load a Phi-3 checkpoint (pre-fused tensors) or one already split per projection."""
        super().load_weights(self._split_fused(weights))
