"""The pooling-model contract: a model that turns a prompt into hidden states (embeddings, classification).

Encoders (BERT, XLM-R, ...) implement :class:`PoolingModel` with ``is_causal = False``: their
attention is bidirectional, so the engine schedules each prompt whole in one step and never shares
their KV through the prefix cache. A :class:`~heron.interfaces.CausalLM` served as an embedder
needs no wrapper: the engine pools its ``forward`` output (final norm applied) itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from heron.interfaces.attention import ForwardBatch
    from heron.interfaces.model import ModelContext

__all__ = ("POOLING_TASKS", "PoolingModel")

#: what a pooling request may ask for ("score" is classify on a pair, or the cosine of two embeddings)
POOLING_TASKS = ("embed", "classify", "encode")


class PoolingModel(ABC):
    """Mix into a ``torch.nn.Module``: ``class BertModel(nn.Module, PoolingModel)``.

    The entry-point name is the HF ``architectures[0]`` value the class serves. Attention goes
    through :class:`heron.layers.Attention` (with ``causal=False`` for encoders).
    """

    #: False: bidirectional attention (whole prompt in one step, no chunked prefill, no prefix caching)
    is_causal: ClassVar[bool] = False
    #: the tasks it serves, a subset of :data:`POOLING_TASKS`
    supported_tasks: ClassVar[tuple[str, ...]] = ("embed", "encode")
    #: classifiers only: the size of :meth:`classify`'s output
    num_labels: int = 0

    @abstractmethod
    def __init__(self, config: Any, ctx: ModelContext) -> None:
        """Build the modules (weights uninitialised) from an HF ``config`` and ``ctx``."""

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """[num_tokens] ids and positions of a flat batch -> hidden states [num_tokens, hidden_size]."""

    @abstractmethod
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (HF names) into the parameters."""

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """One whole prompt's hidden states [n, hidden_size] -> logits [num_labels] (fp32).

        Only classifiers (``"classify" in supported_tasks``) implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a classifier.")
