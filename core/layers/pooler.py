"""Generic pooling: one prompt's hidden states [n, H] -> what an embedding request returns.

``LAST`` (decoder embedders), ``CLS`` (the first token, BERT-style), ``MEAN``, ``ALL`` (every
token's row) and ``STEP`` (the rows of a step-tag token, for process reward models; every row when
no tag is given). L2 normalisation and Matryoshka truncation are per request, applied by the
engine from ``PoolingParams``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ("POOLING_TYPES", "pool_hidden", "rows_needed")

POOLING_TYPES = ("LAST", "CLS", "MEAN", "ALL", "STEP")


def rows_needed(pooling_type: str) -> str:
    """Which rows of the prompt the pooling reads: ``"last"``, ``"first"`` or ``"all"``."""
    return {"LAST": "last", "CLS": "first"}.get(pooling_type, "all")


def pool_hidden(hidden: torch.Tensor, pooling_type: str, token_ids: Sequence[int] | None = None,
                step_tag_id: int | None = None) -> torch.Tensor:
    """Pool ``hidden`` [n, H] (one prompt's rows, in order) with ``pooling_type``.

    Returns:
        [H] for LAST, CLS and MEAN; [n, H] for ALL; [k, H] for STEP (the ``k`` rows whose token
        is ``step_tag_id``; all rows when ``step_tag_id`` or ``token_ids`` is None).

    Raises:
        ValueError: an unknown pooling type.
    """
    if pooling_type == "LAST":
        return hidden[-1]
    if pooling_type == "CLS":
        return hidden[0]
    if pooling_type == "MEAN":
        return hidden.float().mean(dim=0).to(hidden.dtype)
    if pooling_type == "ALL":
        return hidden
    if pooling_type == "STEP":
        if step_tag_id is None or token_ids is None:
            return hidden
        mask = torch.tensor([t == step_tag_id for t in token_ids], device=hidden.device)
        return hidden[mask]
    raise ValueError(f"Unknown pooling type {pooling_type!r}; choose one of {', '.join(POOLING_TYPES)}.")
