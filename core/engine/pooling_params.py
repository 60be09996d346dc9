"""What a pooling request asks for: vLLM's ``PoolingParams`` (embeddings, classification, raw pooling)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from heron.interfaces.pooling import POOLING_TASKS

__all__ = ("PoolingParams",)


@dataclass(slots=True)
class PoolingParams:
    """Settings of one pooling request.

    Attributes:
        task: ``"embed"``, ``"classify"`` or ``"encode"``; None = the engine's default task.
        normalize: L2-normalise the embedding; None = the model's default (``--pooler-config``).
        dimensions: Matryoshka size: keep the first ``dimensions`` values, then normalise; only for
            models trained for it (``matryoshka_dimensions`` / ``is_matryoshka`` in their config).
        truncate_prompt_tokens: keep only the last ``k`` prompt tokens (-1: the last ``max_model_len``).
        use_activation: classify: softmax (sigmoid for one label) over the logits; None = yes.
    """

    task: str | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    truncate_prompt_tokens: int | None = None
    use_activation: bool | None = None

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in POOLING_TASKS:
            raise ValueError(f"Unknown pooling task {self.task!r}; choose one of {', '.join(POOLING_TASKS)}.")
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {self.dimensions}.")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < -1 \
                or self.truncate_prompt_tokens == 0:
            raise ValueError(f"truncate_prompt_tokens must be -1 or at least 1, got {self.truncate_prompt_tokens}.")

    def clone(self, **changes: Any) -> PoolingParams:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
