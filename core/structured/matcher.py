"""Per-sequence grammar state: which tokens may come next, given the tokens accepted so far.

A thin wrapper over ``xgrammar.GrammarMatcher`` that counts accepted tokens (so the engine can
roll back exactly what it un-generates) and owns the end-of-sequence rule: once the grammar is
complete, the matcher allows the stop tokens (EOS); after accepting one it is *terminated* and
allows only the stop tokens again, never other text.
"""

from __future__ import annotations

import torch
import xgrammar as xgr

__all__ = ("RequestMatcher",)


class RequestMatcher:
    """The grammar state of one sequence. Not thread-safe: use it from the engine thread only.

    Build it with :meth:`GrammarBackend.new_matcher`. Feed it every sampled token (EOS included)
    with :meth:`accept`; :meth:`GrammarBackend.apply` reads it to mask the next step's logits.
    """

    __slots__ = ("_matcher", "_stop_row", "num_accepted")

    def __init__(self, matcher: xgr.GrammarMatcher, stop_row: torch.Tensor) -> None:
        self._matcher = matcher
        self._stop_row = stop_row  # int32 [ceil(vocab / 32)]: only the stop tokens' bits set
        #: tokens accepted and not rolled back (a stop token counts as one)
        self.num_accepted = 0

    def accept(self, token_id: int) -> bool:
        """Advance by one sampled token; False (state unchanged) when the grammar rejects it.

        A rejected token means the logits were not masked for this step (or were masked with a
        stale state); the engine should finish the sequence rather than keep generating.
        """
        ok = self._matcher.accept_token(int(token_id))
        if ok:
            self.num_accepted += 1
        return ok

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` accepted tokens (speculative decoding, or the engine dropping
        generated tokens). Rolling back over the stop token un-terminates the matcher."""
        if n < 0 or n > self.num_accepted:
            raise ValueError(
                f"Cannot roll back {n} tokens; only {self.num_accepted} were accepted."
            )
        if n:
            self._matcher.rollback(n)
            self.num_accepted -= n

    def reset(self) -> None:
        """Back to the start of the grammar (as if no token had been accepted)."""
        self._matcher.reset()
        self.num_accepted = 0

    def is_terminated(self) -> bool:
        """True once a stop token was accepted after a complete output."""
        return self._matcher.is_terminated()

    def is_completed(self) -> bool:
        """True when the text accepted so far is a complete match (a stop token may come next)."""
        return self._matcher.is_completed()

    def fill_bitmask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        """Write the allowed next tokens into ``bitmask[row]`` (int32 ``[rows, ceil(V / 32)]``,
        bit ``t % 32`` of word ``t // 32`` set = token ``t`` allowed). Terminated: stop tokens."""
        if self._matcher.is_terminated():
            bitmask[row] = self._stop_row
        else:
            self._matcher.fill_next_token_bitmask(bitmask, row)
