"""SmolLM3 decoders: Llama where some layers use no positional encoding (NoPE).

``config.no_rope_layers[i]`` is 1 when layer ``i`` applies rope and 0 when it does not;
transformers fills it from ``no_rope_layer_interval`` (every n-th layer is NoPE) when absent.
A layer is on a sliding window only when ``use_sliding_window`` is set and ``layer_types`` says so.
"""

from __future__ import annotations

from typing import Any

from heron.interfaces import ModelContext
from heron_plugins.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ("SmolLM3Attention", "SmolLM3DecoderLayer", "SmolLM3ForCausalLM")


def _uses_rope(config: Any, layer_idx: int) -> bool:
    flags = getattr(config, "no_rope_layers", None)
    if flags is None:  # transformers' default: a NoPE layer every ``no_rope_layer_interval`` layers
        return (layer_idx + 1) % int(getattr(config, "no_rope_layer_interval", 4)) != 0
    return bool(flags[layer_idx])


class SmolLM3Attention(LlamaAttention):
    """Llama attention that skips rope on NoPE layers."""

    def __init__(self, config: Any, ctx: ModelContext, layer_idx: int, qkv_bias: bool) -> None:
        super().__init__(config, ctx, layer_idx, qkv_bias)
        self.use_rope = _uses_rope(config, layer_idx)
        if not getattr(config, "use_sliding_window", False):
            self.attn.sliding_window = None


class SmolLM3DecoderLayer(LlamaDecoderLayer):
    """Llama decoder layer with :class:`SmolLM3Attention`."""

    attention_cls = SmolLM3Attention


class SmolLM3ForCausalLM(LlamaForCausalLM):
    """SmolLM3 (``SmolLM3ForCausalLM``)."""

    decoder_layer_cls = SmolLM3DecoderLayer
    supports_tensor_parallel = True
