"""Gemma 3 (text) decoder: Gemma 2 plus per-head q/k norms and a local rope for sliding layers.

Sliding and full-attention layers interleave as ``layer_types`` says (five sliding to one full in
the released models); transformers 5 keys ``rope_parameters`` by layer type, so sliding layers
rotate with the local base (10k) and full layers with the global one (1M, possibly scaled).
Gemma 3 sets no soft caps; a config's ``final_logit_softcapping`` is honoured, while its
``attn_logit_softcapping`` is ignored exactly as transformers' Gemma 3 ignores it (the reference
heron matches stores the value but never passes it to attention).
"""

from __future__ import annotations

from typing import Any

from heron.interfaces import ModelContext
from heron_plugins.models.gemma2 import Gemma2ForCausalLM

__all__ = ("Gemma3ForCausalLM",)


class Gemma3ForCausalLM(Gemma2ForCausalLM):
    """Gemma 3 text model (``model_type`` ``gemma3_text``), e.g. Gemma 3 270M / 1B."""

    qk_norm = True
    rope_per_layer_type = True
    attn_soft_cap = False

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        if getattr(config, "use_bidirectional_attention", False):
            raise ValueError(
                "This Gemma 3 config uses bidirectional attention (an embedding model); "
                "heron's Gemma3ForCausalLM serves causal checkpoints only."
            )
        super().__init__(config, ctx)
