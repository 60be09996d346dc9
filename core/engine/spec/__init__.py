"""Speculative decoding (vLLM's ``speculative_config``): draft tokens proposed cheaply, verified in
one forward of the target model, accepted by rejection sampling so outputs keep the target's
distribution (greedy requests get exactly the tokens of one-at-a-time decoding).

Proposers: prompt lookup (``method: "ngram"``, :mod:`heron.engine.spec.ngram`) and a small draft
model sharing the target's block tables (``draft_model``, :mod:`heron.engine.spec.draft_model`).
"""

from __future__ import annotations

from heron.engine.spec.config import SpeculativeConfig
from heron.engine.spec.decoder import SpecDecoder, SpecStats, may_speculate
from heron.engine.spec.ngram import NgramProposer, ngram_lookup
from heron.engine.spec.verify import Verdict, verify_drafts

__all__ = ("NgramProposer", "SpecDecoder", "SpecStats", "SpeculativeConfig", "Verdict", "may_speculate",
           "ngram_lookup", "verify_drafts")
