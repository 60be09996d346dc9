"""What a pooling request returns: vLLM's ``PoolingRequestOutput`` and its typed views.

The engine hands back one :class:`PoolingRequestOutput` per request, once, when its prompt has
been read (``finished=True``). ``LLM.embed`` / ``classify`` / ``score`` turn it into
:class:`EmbeddingRequestOutput`, :class:`ClassificationRequestOutput` or
:class:`ScoringRequestOutput` with :meth:`from_base`, as vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

__all__ = (
    "ClassificationOutput",
    "ClassificationRequestOutput",
    "EmbeddingOutput",
    "EmbeddingRequestOutput",
    "PoolingOutput",
    "PoolingRequestOutput",
    "ScoringOutput",
    "ScoringRequestOutput",
)

_O = TypeVar("_O")


@dataclass(slots=True)
class PoolingOutput:
    """The pooled data of one request (fp32): an embedding [H], class probabilities [num_labels],
    or per-token rows [n, H]; None when the request failed or was aborted."""

    data: torch.Tensor | None


@dataclass(slots=True)
class EmbeddingOutput:
    embedding: list[float]

    @staticmethod
    def from_base(output: PoolingOutput) -> EmbeddingOutput:
        data = _data(output)
        if data.dim() != 1:
            raise ValueError("an embedding is one vector; this request pooled per-token rows (use encode).")
        return EmbeddingOutput(data.tolist())

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)


@dataclass(slots=True)
class ClassificationOutput:
    #: the class probabilities (softmax of the logits; sigmoid for a single label)
    probs: list[float]

    @staticmethod
    def from_base(output: PoolingOutput) -> ClassificationOutput:
        data = _data(output)
        if data.dim() != 1:
            raise ValueError("a classification is one vector of class probabilities.")
        return ClassificationOutput(data.tolist())

    @property
    def num_classes(self) -> int:
        return len(self.probs)


@dataclass(slots=True)
class ScoringOutput:
    #: a cross-encoder's relevance (sigmoid of its single logit) or the cosine of two embeddings
    score: float

    @staticmethod
    def from_base(output: PoolingOutput) -> ScoringOutput:
        data = _data(output)
        if data.numel() != 1:
            raise ValueError(f"a score is one value; got {data.numel()} (a cross-encoder needs num_labels 1).")
        return ScoringOutput(float(data.reshape(()).item()))


def _data(output: PoolingOutput) -> torch.Tensor:
    if output.data is None:
        raise ValueError("the request has no pooled data (it failed or was aborted).")
    return output.data


@dataclass(slots=True)
class PoolingRequestOutput(Generic[_O]):
    """One finished pooling request. ``error`` says why the engine ended it, when it failed."""

    request_id: str
    outputs: _O
    prompt_token_ids: list[int]
    finished: bool = True
    num_cached_tokens: int = 0
    error: str | None = None


def _converted(out: PoolingRequestOutput, kind: type) -> tuple:
    if out.error is not None:
        raise RuntimeError(f"request {out.request_id} failed: {out.error}")
    return out.request_id, kind.from_base(out.outputs), out.prompt_token_ids, out.finished, out.num_cached_tokens


@dataclass(slots=True)
class EmbeddingRequestOutput(PoolingRequestOutput[EmbeddingOutput]):
    """A pooling output whose ``outputs.embedding`` is the embedding (``LLM.embed``)."""

    @classmethod
    def from_base(cls, request_output: PoolingRequestOutput) -> EmbeddingRequestOutput:
        return cls(*_converted(request_output, EmbeddingOutput))


@dataclass(slots=True)
class ClassificationRequestOutput(PoolingRequestOutput[ClassificationOutput]):
    """A pooling output whose ``outputs.probs`` are the class probabilities (``LLM.classify``)."""

    @classmethod
    def from_base(cls, request_output: PoolingRequestOutput) -> ClassificationRequestOutput:
        return cls(*_converted(request_output, ClassificationOutput))


@dataclass(slots=True)
class ScoringRequestOutput(PoolingRequestOutput[ScoringOutput]):
    """A pooling output whose ``outputs.score`` is the pair's score (``LLM.score``)."""

    @classmethod
    def from_base(cls, request_output: PoolingRequestOutput) -> ScoringRequestOutput:
        return cls(*_converted(request_output, ScoringOutput))
