"""The engine's pooling side: which model serves which tasks, and each pooling request's rows.

A pooling request runs prefill only. Each step the engine hands :meth:`PoolingState.keep` the
hidden-state rows of the request's chunk (a view into the step's output); only the rows the
pooling reads are kept (the last row for LAST, the first for CLS, all for the others and for
classifiers), and copied only when the prompt spans more steps. Once the prompt is read,
:meth:`PoolingState.result` pools them, applies Matryoshka truncation and normalisation, or the
classifier head and its activation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from heron.engine.pooling_params import PoolingParams
from heron.interfaces import PoolingModel
from heron.layers import pool_hidden, rows_needed

__all__ = ("PoolingSetup", "PoolingState", "pooling_setup")


@dataclass(slots=True)
class PoolingSetup:
    """What a pooling engine serves: its tasks, default task and settings (from ``PoolerConfig``)."""

    pooler: Any  # heron.loader.pooling_config.PoolerConfig
    is_causal: bool
    supported_tasks: tuple[str, ...]
    hidden_size: int

    @property
    def default_task(self) -> str:
        return "classify" if self.pooler.convert == "classify" else "embed"

    def resolve(self, params: PoolingParams) -> PoolingParams:
        """Fill the request's defaults and check it against the model.

        Raises:
            ValueError: a task the model does not serve, or ``dimensions`` it cannot give.
        """
        task = params.task or self.default_task
        if task not in self.supported_tasks:
            raise ValueError(f"This model serves {', '.join(self.supported_tasks)}, not {task!r}.")
        normalize = params.normalize
        if normalize is None:
            normalize = task == "embed" and bool(self.pooler.normalize)
        dims = params.dimensions
        if dims is not None:
            allowed = self.pooler.matryoshka_dimensions
            if task == "classify":
                raise ValueError("dimensions applies to embeddings, not to classification.")
            if allowed is None:
                raise ValueError("This model does not support matryoshka representation; changing the output "
                                 "dimensions would give poor embeddings (drop `dimensions`).")
            if (allowed and dims not in allowed) or dims > self.hidden_size:
                raise ValueError(f"dimensions {dims} is not served; this model gives "
                                 f"{allowed or f'at most {self.hidden_size}'}.")
        return params.clone(task=task, normalize=normalize)

    def use_prefix_cache(self, task: str) -> bool:
        """Prefix hits are fine only when every row the pooling reads is computed anyway: the last one."""
        return self.is_causal and task != "classify" and rows_needed(self.pooler.pooling_type) == "last"


def pooling_setup(model: Any, pooler: Any, hidden_size: int) -> PoolingSetup:
    """The setup for ``model`` served with ``pooler`` (a resolved ``PoolerConfig`` of runner pooling).

    Raises:
        ValueError: the model cannot do what ``--convert`` asks.
    """
    if isinstance(model, PoolingModel):
        tasks = tuple(type(model).supported_tasks)
        causal = bool(type(model).is_causal)
    else:  # a causal LM served as an embedder: its forward gives the final-norm hidden states
        tasks, causal = ("embed", "encode"), True
    if pooler.convert == "classify" and "classify" not in tasks:
        raise ValueError(f"{type(model).__name__} has no classification head; serve it with --convert embed.")
    return PoolingSetup(pooler, causal, tasks, hidden_size)


@dataclass(slots=True)
class PoolingState:
    """One pooling request: its resolved parameters and the hidden rows kept so far."""

    params: PoolingParams
    pooling_type: str
    step_tag_id: int | None = None
    rows: list[torch.Tensor] = field(default_factory=list)  # each [k, H]
    data: torch.Tensor | None = None  # the result, once pooled

    @property
    def wanted(self) -> str:
        return "all" if self.params.task == "classify" else rows_needed(self.pooling_type)

    def keep(self, chunk: torch.Tensor, start: int, final: bool) -> None:
        """Keep what the pooling needs of ``chunk`` [n, H], the rows of prompt positions ``start..``."""
        if start == 0:
            self.rows = []  # a first chunk (or a recompute after preemption) starts afresh
        wanted = self.wanted
        if wanted == "last":
            if final:
                self.rows = [chunk[-1:]]
            return
        if wanted == "first":
            chunk = chunk[:1] if start == 0 else chunk[:0]
        if chunk.shape[0]:
            self.rows.append(chunk if final else chunk.clone())  # a view would pin the whole step's output

    @torch.inference_mode()  # the classifier head runs on inference tensors from the step
    def result(self, model: Any, token_ids: list[int]) -> torch.Tensor:
        """Pool the kept rows: [H] for embeddings, [num_labels] probabilities for classification."""
        hidden = self.rows[0] if len(self.rows) == 1 else torch.cat(self.rows)  # [n, H]
        self.rows = []
        p = self.params
        if p.task == "classify":
            logits = model.classify(hidden).float().reshape(-1)  # [num_labels]
            if p.use_activation is False:
                return logits
            return torch.sigmoid(logits) if logits.numel() == 1 else torch.softmax(logits, dim=-1)
        data = pool_hidden(hidden, self.pooling_type, token_ids, self.step_tag_id).float()
        if p.dimensions is not None:
            data = data[..., : p.dimensions]
        if p.normalize:
            data = torch.nn.functional.normalize(data, p=2, dim=-1)
        return data.clone() if data._base is not None else data  # a view would pin the step's output
