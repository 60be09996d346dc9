"""Iteration-level continuous batching with chunked prefill and preemption by recompute.

Every step the scheduler hands the model one flat batch: one token for each running decode and
prefill chunks, within ``max_num_seqs`` sequences and ``max_num_batched_tokens`` tokens. Running
sequences go first (in policy order); when the KV pool is full, the sequence that would be
scheduled last is preempted (its blocks freed, its tokens recomputed later, partly from the
prefix cache). Waiting sequences are admitted only in steps that preempted nothing. When the
block manager frees out-of-window blocks (sliding-window models), a chunk shrinks to what the
pool holds, so a sequence far longer than the pool still runs (and is recomputed) in pieces.
A request marked ``whole_prompt`` (a bidirectional encoder) is admitted only when all of its
prompt fits in the step, and one marked ``use_prefix_cache=False`` never matches the prefix cache.

Speculative decoding: ``schedule(drafts)`` gets draft tokens per decoding sequence. A sequence is
scheduled with its ``k`` drafts (``1 + k`` new tokens, the drafts appended to its tokens until the
engine verifies them) only when the step's token budget still leaves one token for each running
sequence after it and its extra KV blocks fit without preempting anyone (one free block kept per
later running sequence); otherwise it decodes one token as usual.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from heron.engine.block_manager import BlockManager
from heron.engine.request import Sequence, SequenceStatus

__all__ = ("ScheduledSeq", "Scheduler", "SchedulerOutput")


@dataclass(slots=True)
class ScheduledSeq:
    seq: Sequence
    num_new_tokens: int
    #: the chunk reaches the end of the sequence's tokens, so a token is sampled after it
    samples: bool
    #: draft tokens at the end of the chunk (speculative decoding): verified on the chunk's logits
    num_draft_tokens: int = 0

    @property
    def needs_logits(self) -> bool:
        """A token is sampled from the chunk's last row (prefill-only and pooling requests sample
        none; a speculating chunk is verified on all its rows instead)."""
        return self.samples and not self.num_draft_tokens and self.seq.params.max_tokens != 0


@dataclass(slots=True)
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


class _Waiting:
    """The waiting queue: FIFO for ``fcfs``, a heap on (priority, arrival) for ``priority``."""

    def __init__(self, policy: str) -> None:
        if policy not in ("fcfs", "priority"):
            raise ValueError(f"Unknown scheduling policy {policy!r}: use 'fcfs' or 'priority'.")
        self.policy = policy
        self.fifo: deque[Sequence] = deque()
        self.heap: list[tuple[tuple, Sequence]] = []

    def __len__(self) -> int:
        return len(self.fifo) + len(self.heap)

    def __iter__(self) -> Iterator[Sequence]:
        yield from self.fifo
        yield from (seq for _, seq in self.heap)

    def push(self, seq: Sequence, front: bool = False) -> None:
        if self.policy == "priority":
            heapq.heappush(self.heap, (seq.priority_key, seq))
        elif front:
            self.fifo.appendleft(seq)
        else:
            self.fifo.append(seq)

    def peek(self) -> Sequence:
        return self.heap[0][1] if self.policy == "priority" else self.fifo[0]

    def pop(self) -> Sequence:
        return heapq.heappop(self.heap)[1] if self.policy == "priority" else self.fifo.popleft()

    def remove(self, seq: Sequence) -> bool:
        if self.policy == "priority":
            for i, (_, s) in enumerate(self.heap):
                if s is seq:
                    self.heap.pop(i)
                    heapq.heapify(self.heap)
                    return True
            return False
        try:
            self.fifo.remove(seq)
            return True
        except ValueError:
            return False


class Scheduler:
    """Decides, each step, which sequences run and how many of their tokens."""

    def __init__(self, blocks: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int, policy: str = "fcfs", max_loras: int | None = None) -> None:
        self.blocks = blocks
        #: distinct LoRA adapters a step may hold (None: LoRA off)
        self.max_loras = max_loras
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.policy = policy
        self.waiting = _Waiting(policy)
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        if seq.num_tokens > self.max_model_len:
            raise ValueError(f"The prompt ({seq.num_tokens} tokens) exceeds max_model_len ({self.max_model_len}).")
        if seq.request.whole_prompt and seq.num_tokens > self.max_num_batched_tokens:
            raise ValueError(f"The prompt ({seq.num_tokens} tokens) exceeds max_num_batched_tokens "
                             f"({self.max_num_batched_tokens}); this model reads a prompt in one step: shorten it "
                             "or raise --max-num-batched-tokens.")
        total_blocks = self.blocks.min_blocks(min(self.max_model_len, seq.num_tokens + 1))
        if total_blocks > self.blocks.num_usable_blocks:
            raise ValueError(
                f"The prompt ({seq.num_tokens} tokens) needs {total_blocks} KV blocks but the cache has only "
                f"{self.blocks.num_usable_blocks}; raise kv_cache_memory_bytes or shorten the prompt."
            )
        self.waiting.push(seq)

    def has_unfinished(self) -> bool:
        return bool(self.running) or len(self.waiting) > 0

    def remove(self, seq: Sequence) -> None:
        """Drop ``seq`` wherever it is and free its blocks (finish or abort)."""
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.blocks.free_seq(seq)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.blocks.free_seq(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        # recompute keeps the generated tokens, so a grammar matcher's state stays valid
        out.preempted.append(seq)
        self.waiting.push(seq, front=True)

    def _chunk(self, seq: Sequence, budget: int, least: int) -> int:
        """The tokens of ``seq`` to compute this step; in window mode no more than the pool holds
        now (but at least ``least``: a running sequence preempts others for one token)."""
        n = min(seq.num_tokens - seq.num_computed_tokens, budget)
        if self.blocks.sliding_window:
            n = min(n, max(least, self.blocks.make_room(seq)))
        return n

    def _speculate(self, seq: Sequence, drafts: list[int], budget: int, later: int) -> int:
        """Schedule ``seq`` with as many of ``drafts`` as fit (appended to its tokens); returns how
        many (0: none, nothing taken). ``later``: running sequences still to schedule after it."""
        if seq.num_computed_tokens != seq.num_tokens - 1:
            return 0
        k = min(len(drafts), budget - 1 - later, self.max_model_len - seq.num_tokens)
        if k <= 0:
            return 0
        extra = self.blocks.blocks_needed(seq, 1 + k) - self.blocks.blocks_needed(seq, 1)
        if extra > self.blocks.num_free_blocks - later or not self.blocks.allocate(seq, 1 + k):
            return 0
        seq.token_ids.extend(drafts[:k])
        return k

    def schedule(self, drafts: dict[int, list[int]] | None = None) -> SchedulerOutput:
        """The next step's batch; ``drafts``: draft tokens per seq id of decoding sequences."""
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        if self.policy == "priority":
            self.running.sort(key=lambda s: s.priority_key)
        scheduled: set[int] = set()
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            d = drafts.get(seq.seq_id) if drafts else None
            k = self._speculate(seq, d, budget, len(self.running) - i - 1) if d else 0
            if k:
                out.scheduled.append(ScheduledSeq(seq, 1 + k, True, k))
                scheduled.add(seq.seq_id)
                budget -= 1 + k
                i += 1
                continue
            n = self._chunk(seq, budget, 1)
            while not self.blocks.allocate(seq, n):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
            else:
                out.scheduled.append(ScheduledSeq(seq, n, seq.num_computed_tokens + n >= seq.num_tokens))
                scheduled.add(seq.seq_id)
                budget -= n
                i += 1
                continue
            break  # seq itself was preempted; everything after it was too
        if not out.preempted:
            now = time.time()
            held: list[Sequence] = []  # waiting for a LoRA slot: the step already has max_loras adapters
            loras = {s.request.lora_uid for s in self.running} - {None} if self.max_loras else None
            while len(self.waiting) and budget > 0 and len(self.running) < self.max_num_seqs:
                seq = self.waiting.peek()
                uid = seq.request.lora_uid
                if loras is not None and uid is not None and uid not in loras and len(loras) >= self.max_loras:
                    held.append(self.waiting.pop())
                    continue
                if seq.num_computed_tokens == 0 and not seq.block_table:
                    if seq.request.use_prefix_cache:
                        self.blocks.match_prefix(seq)
                    if seq.num_cached_tokens < 0:
                        seq.num_cached_tokens = seq.num_computed_tokens
                n = self._chunk(seq, budget, 0)
                short = seq.request.whole_prompt and n < seq.num_tokens - seq.num_computed_tokens
                if n == 0 or short or not self.blocks.allocate(seq, n):
                    self.blocks.free_seq(seq)  # do not hold prefix blocks while waiting
                    break
                self.waiting.pop()
                seq.status = SequenceStatus.RUNNING
                self.running.append(seq)
                req = seq.request
                if req.metrics.first_scheduled_time is None:
                    req.metrics.first_scheduled_time = now
                out.scheduled.append(ScheduledSeq(seq, n, seq.num_computed_tokens + n >= seq.num_tokens))
                budget -= n
                if loras is not None and uid is not None:
                    loras.add(uid)
            for seq in reversed(held):
                self.waiting.push(seq, front=True)
        return out
