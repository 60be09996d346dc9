"""Prompt-lookup (n-gram) drafts: continue the sequence the way it continued before.

For each sequence, find the longest suffix n-gram (``prompt_lookup_max`` tokens down to
``prompt_lookup_min``) that also occurred earlier in its prompt + output, and propose the tokens
that followed that earlier occurrence: at most ``k``, and at most ``n``, the length of the match.
A short match predicts a short continuation, and on a CPU each draft token makes the verification
step longer (about a quarter of a decode step each): on the copy workload of
``benchmarks/spec_decode.py`` the bound proposes ~15% fewer draft tokens for about as many accepted
(the speed-up moved 1.51x -> 1.52-1.54x, within the host's noise).
``prompt_lookup_min >= num_speculative_tokens`` always drafts ``k`` tokens (vLLM's behaviour; its
defaults, 5 and 5 with ``k <= 5``, are such a setting).

Candidates are the earlier positions holding the last token (one vectorised comparison), extended
backwards a step at a time over all candidates at once, so a lookup costs a few numpy passes over
the sequence, not a Python loop over it. Among matches of the same length, the one with the most
tokens to propose wins, then the most recent.
"""

from __future__ import annotations

import numpy as np

from heron.engine.request import Sequence

__all__ = ("NgramProposer", "ngram_lookup")


def ngram_lookup(tokens: np.ndarray, k: int, min_n: int, max_n: int) -> list[int]:
    """The up to ``k`` tokens that followed the longest earlier occurrence of ``tokens``' suffix.

    Args:
        tokens: ``[L]`` int64, the sequence so far.
        k: the most tokens to propose.
        min_n: the shortest suffix that counts as a match.
        max_n: the longest suffix tried.

    Returns:
        The proposal (empty when no suffix of at least ``min_n`` tokens occurred before): at most
        ``k`` tokens, and at most as many as the matched suffix is long.
    """
    n_tok = int(tokens.shape[0])
    if n_tok < min_n + 1 or k < 1:
        return []
    ends = np.flatnonzero(tokens[:-1] == tokens[-1])  # [C] earlier positions of the last token
    if ends.size == 0:
        return []
    length = np.ones(ends.size, dtype=np.int64)  # [C] matched suffix length so far
    alive = np.ones(ends.size, dtype=bool)
    for d in range(1, max_n):
        pos = ends - d
        ok = alive & (pos >= 0)
        ok[ok] = tokens[pos[ok]] == tokens[n_tok - 1 - d]
        alive = ok
        if not alive.any():
            break
        length += alive
    good = length >= min_n
    if not good.any():
        return []
    ends, length = ends[good], length[good]
    # [C] tokens to propose after each match (>= 1): those available, at most k and the match's length
    follow = np.minimum(np.minimum(k, n_tok - 1 - ends), length)
    best = np.lexsort((ends, follow, length))[-1]  # longest, then fullest proposal, then latest
    start = int(ends[best]) + 1
    return tokens[start:start + int(follow[best])].tolist()


class NgramProposer:
    """Proposes draft tokens by prompt lookup (vLLM's ``method: "ngram"``)."""

    def __init__(self, min_n: int, max_n: int) -> None:
        self.min_n, self.max_n = min_n, max_n

    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[list[int]]:
        """Up to ``ks[i]`` draft tokens for each of ``seqs`` (an empty list: no match)."""
        return [ngram_lookup(np.asarray(seq.token_ids, dtype=np.int64), k, self.min_n, self.max_n)
                for seq, k in zip(seqs, ks, strict=True)]
