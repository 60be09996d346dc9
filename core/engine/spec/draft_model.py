"""Draft-model proposals: a smaller model of the same vocabulary guesses the next ``k`` tokens.

The draft has its own paged KV pool with the target's block size and block count, and reads and
writes it through the *target's* block tables, so a position has the same slot in both pools and
the draft needs no block manager of its own. Proposing happens in two phases: before scheduling,
:meth:`DraftModelProposer.propose` asks for ``k`` placeholder tokens per sequence (the scheduler
then allocates the blocks for them); after scheduling, :meth:`DraftModelProposer.fill` runs the
draft greedily over the scheduled sequences, batched: a first forward that catches each sequence
up (the tokens whose draft KV it does not hold yet, ending at the last token) and yields the first
draft, then ``k - 1`` one-token forwards, and writes the drafts over the placeholders. After
verification, the draft KV of the accepted drafts stays valid (same tokens, same positions); that
of rejected ones is written again next time. A preempted sequence starts over.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from heron.engine.model_runner import StepPlan, run_plan
from heron.engine.request import Sequence
from heron.layers.fused_ops import argmax_rows

__all__ = ("DraftModelProposer",)

log = logging.getLogger("heron.engine")


class DraftModelProposer:
    """Greedy drafts from a second, smaller model (vLLM's ``method: "draft_model"``)."""

    def __init__(self, model: torch.nn.Module, backend: Any, block_size: int, device: torch.device,
                 vocab_size: int) -> None:
        self.model, self.backend, self.block_size, self.device = model, backend, block_size, device
        self.vocab_size = vocab_size
        #: seq_id -> (its num_preemptions when last seen, tokens whose draft KV is valid)
        self.computed: dict[int, tuple[int, int]] = {}

    @classmethod
    def load(cls, path: str | None, engine: Any) -> DraftModelProposer:
        """Load the draft checkpoint at ``path`` for ``engine``'s target and give it a KV pool.

        Raises:
            ValueError: the draft's vocabulary differs from the target's, or the target slides
                its attention window (its block tables drop blocks the draft would still read).
        """
        from heron.engine.setup import load_model
        from heron.layers import allocate_kv_caches
        from heron.loader import load_checkpoint

        checkpoint = load_checkpoint(path)
        vocab = getattr(checkpoint.hf_config, "vocab_size", None)
        if vocab != engine.vocab_size:
            raise ValueError(f"The draft model {path} has a vocabulary of {vocab} tokens, the target {engine.vocab_size}"
                             "; a draft model must share the target's tokenizer.")
        if engine.sliding_window is not None:
            raise ValueError("A draft model cannot share the block tables of a sliding-window model; use "
                             '{"method": "ngram"} for this model.')
        loaded = load_model(checkpoint, engine.config, dtype=engine.dtype, device=engine.device)
        allocate_kv_caches(loaded.model, loaded.backend_cls, engine.num_kv_blocks, engine.config.block_size,
                           engine.dtype, engine.device)
        log.info("draft model: %s (%d parameters)", path, loaded.num_parameters)
        return cls(loaded.model, loaded.backend, engine.config.block_size, engine.device, vocab)

    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[list[int]]:
        """Placeholders (``k`` zeros each): :meth:`fill` writes the drafts once blocks are allocated."""
        return [[0] * k for k in ks]

    def _start(self, seq: Sequence) -> int:
        """Tokens of ``seq`` whose draft KV is valid (0 after a preemption or when new)."""
        seen = self.computed.get(seq.seq_id)
        if seen is None or seen[0] != seq.num_preemptions:
            return 0
        return min(seen[1], seq.num_computed_tokens)

    @torch.inference_mode()
    def fill(self, items: list[Any]) -> None:
        """Run the draft for the scheduled items with drafts and write its tokens over the placeholders."""
        seqs = [item.seq for item in items]
        ks = [item.num_draft_tokens for item in items]
        bases = [seq.num_tokens - k for seq, k in zip(seqs, ks, strict=True)]  # tokens before the drafts
        starts = [self._start(seq) for seq in seqs]
        drafts: list[list[int]] = [[] for _ in seqs]
        # forward 0: each sequence from its first unseen token up to its last real token
        chunks = [(i, starts[i], bases[i]) for i in range(len(seqs))]
        for step in range(max(ks)):
            tokens = self._forward(seqs, chunks)  # [len(chunks)] the next draft of each
            nxt = []
            for (i, _, end), token in zip(chunks, tokens, strict=True):
                drafts[i].append(token)
                seqs[i].token_ids[bases[i] + step] = token
                if step + 1 < ks[i]:
                    nxt.append((i, end, end + 1))  # feed the draft just made
            chunks = nxt
        for seq, base, k in zip(seqs, bases, ks, strict=True):
            # draft KV now covers positions < base + k - 1 (the last draft was never fed)
            self.computed[seq.seq_id] = (seq.num_preemptions, base + k - 1)

    def _forward(self, seqs: list[Sequence], chunks: list[tuple[int, int, int]]) -> list[int]:
        """One draft forward over ``chunks`` (sequence index, first position, end); greedy next tokens."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        q_lens, s_lens, tables, sample_rows = [], [], [], []
        for i, start, end in chunks:
            seq = seqs[i]
            table = seq.block_table
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            q_lens.append(end - start)
            s_lens.append(end)
            tables.append(table)
            sample_rows.append(len(ids) - 1)
        width = max(len(t) for t in tables)
        block_tables = torch.zeros(len(tables), width, dtype=torch.int32)  # [R, W]
        for r, t in enumerate(tables):
            block_tables[r, : len(t)] = torch.tensor(t, dtype=torch.int32)
        plan = StepPlan(torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64), q_lens,
                        s_lens, block_tables, torch.tensor(slots, dtype=torch.int64), sample_rows)
        logits = run_plan(self.model, self.backend, plan.to(self.device), bs).sample  # [R, vocab]
        return argmax_rows(logits[:, : self.vocab_size]).tolist()

    def verified(self, seq: Sequence, base: int, k: int, accepted: int) -> None:
        """After verification: the draft KV of accepted drafts stays; a finished sequence is forgotten."""
        if seq.finished:
            self.computed.pop(seq.seq_id, None)
            return
        self.computed[seq.seq_id] = (seq.num_preemptions, min(base + accepted, base + k - 1))

    def forget(self, live: set[int]) -> None:
        """Drop the state of sequences no longer running (aborted, preempted or finished elsewhere)."""
        for seq_id in [s for s in self.computed if s not in live]:
            del self.computed[seq_id]
