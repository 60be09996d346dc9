"""The model contract: a causal LM over a flat batch of tokens from many requests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from heron.interfaces.attention import AttentionBackend, ForwardBatch

__all__ = ("CausalLM", "ModelContext")


@dataclass(slots=True)
class ModelContext:
    """What a model needs besides its HF config."""

    dtype: torch.dtype
    device: torch.device
    #: the backend instance, or None when the engine chooses it after the model is built (from
    #: what its attention layers need) and binds it to every :class:`heron.layers.Attention`
    attention_backend: AttentionBackend | None
    tp_rank: int = 0
    tp_size: int = 1
    extra: dict[str, Any] | None = None  # kernel options (e.g. weight quantization)


class CausalLM(ABC):
    """Mix into a ``torch.nn.Module``: ``class MyLM(nn.Module, CausalLM)``.

    The entry-point name is the HF ``architectures[0]`` value this class serves. Attention
    must go through :class:`heron.layers.Attention` so the engine can bind KV caches and the
    chosen backend does the work.
    """

    #: whether LoRA adapters can be served on this model (see :meth:`lora_target`); a plugin whose
    #: modules cannot take them sets False, and ``--enable-lora`` is refused with a clear error
    supports_lora: bool = True
    #: whether the model splits over ``ctx.tp_size`` ranks (built from :mod:`heron.layers.parallel`:
    #: column/row-parallel projections, split heads, vocabulary-parallel embedding and LM head).
    #: A plugin that leaves it False is refused with a clear error at ``--tensor-parallel-size`` > 1.
    supports_tensor_parallel: bool = False

    @abstractmethod
    def __init__(self, config: Any, ctx: ModelContext) -> None:
        """Build the modules (weights uninitialised) from an HF ``config`` and ``ctx``."""

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """Run the decoder over the step's tokens.

        Args:
            input_ids: [num_tokens] int64, the new tokens of every scheduled request, flat.
            positions: [num_tokens] int64, each token's position in its sequence.
            batch: the step's :class:`ForwardBatch` (with backend metadata filled in).
        Returns:
            hidden states [num_tokens, hidden_size].
        """

    @abstractmethod
    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[n, hidden_size] -> [n, vocab_size] logits (fp32 or model dtype)."""

    @abstractmethod
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (HF names; GGUF files are renamed to HF names by the loader)."""

    def lora_target(self, name: str) -> tuple[str, tuple[int, int] | None]:
        """Where the HF module ``name`` (e.g. ``model.layers.0.self_attn.q_proj``) lives in this model.

        Returns:
            (heron module name, (first output row, rows) inside a fused projection, or None for
            the whole output). The default is ``(name, None)``: heron's module names are HF's.
        """
        return name, None
