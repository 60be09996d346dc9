"""Checking draft tokens against the target model: rejection sampling (Leviathan et al., 2023).

A sequence with ``k`` drafts ``d_0 .. d_{k-1}`` was forwarded with its last token and the drafts,
so row ``j`` of its logits (``[k + 1, vocab]``) is the target's next-token distribution after
``d_0 .. d_{j-1}``. Each row is first processed exactly as the sampler would process it at that
position (logit bias, allowed and bad words, penalties over the output *up to that draft*), through
the sampler's own functions on a per-position view of the sequence.

Greedy requests accept drafts while each equals the row's argmax, then take the argmax of the
first row that disagrees (or of the last row): exactly the tokens decoding one at a time gives.
Random requests keep the target distribution ``p``: the drafts are point masses (prompt lookup, a
greedy draft model), so ``d_j`` is accepted with probability ``p_j(d_j)``; at the first rejection
a token is drawn from ``p_j`` without ``d_j``, renormalised; when every draft is accepted a bonus
token is drawn from ``p_k``. Noise comes from the request's own generator when it is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from heron.engine.request import Sequence
from heron.engine.sampler import Sampler
from heron.layers.fused_ops import argmax_rows

__all__ = ("Verdict", "verify_drafts")


@dataclass(slots=True)
class Verdict:
    """The outcome for one sequence: ``accepted`` drafts kept, then ``tokens[-1]`` as the new token."""

    tokens: list[int]  # the accepted drafts, then the bonus or corrected token
    accepted: int


class _AtPosition:
    """What the sampler's processing reads of a sequence, as it was before draft ``j`` (no copy of
    the prompt: ``token_ids`` is the base list plus the drafts before ``j``)."""

    __slots__ = ("generator", "matcher", "num_prompt_tokens", "params", "token_ids")

    def __init__(self, seq: Sequence, token_ids: list[int]) -> None:
        self.params, self.num_prompt_tokens, self.generator = seq.params, seq.num_prompt_tokens, seq.generator
        self.token_ids, self.matcher = token_ids, None

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


def _changes_logits(seq: Sequence) -> bool:
    p = seq.params
    return bool(p.logit_bias or p.allowed_token_ids is not None or p._bad_words_ids or p.min_tokens
                or p.needs_penalties)


def processed_rows(sampler: Sampler, seq: Sequence, drafts: list[int], logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (``[k + 1, vocab]``) as the sampler processes them before choosing, row by row.

    Row ``j`` sees the output up to draft ``j`` (``seq.token_ids`` holds no draft here).
    """
    x = logits.float()
    if not _changes_logits(seq):
        return x
    x = x.clone()
    base = seq.token_ids
    views = [_AtPosition(seq, base + drafts[:j]) for j in range(len(drafts) + 1)]
    sampler._mask_and_bias(x, views)  # noqa: SLF001 - the sampler's own processing, reused read-only
    if seq.params.needs_penalties:
        sampler._penalties(x, views, list(range(len(views))))  # noqa: SLF001
    return x


def _race(probs: torch.Tensor, gen: torch.Generator) -> int:
    """Draw from ``probs`` (``[vocab]``, not necessarily normalised) by the exponential race."""
    noise = torch.empty_like(probs).exponential_(generator=gen)
    return int((probs / noise).argmax())


def _verify_random(sampler: Sampler, seq: Sequence, drafts: list[int], x: torch.Tensor) -> Verdict:
    p = seq.params
    x = x / p.temperature
    if p.needs_filters:
        x = Sampler._filter(x, [p] * x.shape[0])  # noqa: SLF001
    probs = torch.softmax(x, dim=-1)  # [k + 1, vocab]
    k = len(drafts)
    gen = seq.generator if seq.generator is not None else sampler.generator
    d = torch.tensor(drafts, dtype=torch.long, device=probs.device)
    p_draft = probs[torch.arange(k, device=probs.device), d]  # [k]
    u = torch.rand(k, generator=gen, device=probs.device)
    rejected = (u >= p_draft).nonzero()
    if rejected.numel() == 0:
        return Verdict([*drafts, _race(probs[k], gen)], k)
    j = int(rejected[0, 0])
    residual = probs[j].clone()
    residual[drafts[j]] = 0.0  # p without the rejected draft (a point-mass proposal's max(0, p - q))
    return Verdict([*drafts[:j], _race(residual, gen)], j)


def verify_drafts(sampler: Sampler, seq: Sequence, drafts: list[int], logits: torch.Tensor) -> Verdict:
    """Accept a prefix of ``drafts`` for ``seq`` and pick the token after it.

    Args:
        sampler: the engine's sampler (its processing and shared generator).
        seq: the sequence, its ``token_ids`` without the drafts.
        drafts: the ``k`` proposed tokens.
        logits: ``[k + 1, vocab]``, row ``j`` predicting the token after ``drafts[:j]``.
    """
    if seq.params.greedy and not _changes_logits(seq):
        best = argmax_rows(logits).tolist()  # [k + 1]; a float32 copy would hold the same values
    else:
        x = processed_rows(sampler, seq, drafts, logits)
        if not seq.params.greedy:
            return _verify_random(sampler, seq, drafts, x)
        best = argmax_rows(x).tolist()
    a = 0
    while a < len(drafts) and best[a] == drafts[a]:
        a += 1
    return Verdict([*drafts[:a], best[a]], a)
