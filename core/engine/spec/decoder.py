"""The engine's speculative-decoding step: propose drafts, then verify them and roll back.

Before scheduling, :meth:`SpecDecoder.propose` asks the proposer for up to ``k`` draft tokens for
each running sequence that may speculate; the scheduler appends a sequence's drafts to its tokens
only if it schedules it with all of them (``num_new_tokens = 1 + k``, KV room taken without
preempting anyone, else no drafts). After the forward, :meth:`SpecDecoder.finish` takes the drafts
off again, verifies them on the whole chunk's logits (:mod:`heron.engine.spec.verify`), appends the
accepted ones and the bonus token one by one with the usual stop checks (nothing past a stop is
kept), sets ``num_computed_tokens`` to what the accepted tokens make valid and only then commits
full blocks to the prefix cache, so no rejected token is ever hashed. Blocks allocated for rejected
positions stay in the table and are written again next step.

Requests whose per-token work the draft path cannot reproduce exactly decline (they run in the same
batch, one token per step): structured outputs (grammar), logprobs, prompt logprobs, ``min_tokens``
not yet reached.
"""

from __future__ import annotations

import logging
from typing import Any

from heron.engine.request import Sequence, SequenceStatus
from heron.engine.rows import append_token
from heron.engine.spec.config import SpeculativeConfig
from heron.engine.spec.ngram import NgramProposer
from heron.engine.spec.verify import verify_drafts

__all__ = ("SpecDecoder", "SpecStats")

log = logging.getLogger("heron.engine")


class SpecStats:
    """vLLM's speculative-decoding counters (``vllm:spec_decode_*``)."""

    def __init__(self, k: int) -> None:
        self.num_drafts = 0  # verification passes (a sequence with drafts in a step)
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.accepted_per_pos = [0] * k  # drafts accepted at position 0, 1, ... k - 1

    def record(self, k: int, accepted: int) -> None:
        self.num_drafts += 1
        self.num_draft_tokens += k
        self.num_accepted_tokens += accepted
        for j in range(accepted):
            self.accepted_per_pos[j] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"spec_decode_num_drafts": self.num_drafts, "spec_decode_num_draft_tokens": self.num_draft_tokens,
                "spec_decode_num_accepted_tokens": self.num_accepted_tokens,
                "spec_decode_num_accepted_tokens_per_pos": list(self.accepted_per_pos)}


def may_speculate(seq: Sequence) -> bool:
    """Whether drafts can be verified for ``seq`` exactly as decoding one token at a time would go."""
    p, req = seq.params, seq.request
    return (seq.status is SequenceStatus.RUNNING and seq.num_computed_tokens == seq.num_tokens - 1
            and seq.num_tokens > seq.num_prompt_tokens and req.pooling is None and not req.siblings_pending
            and seq.matcher is None and seq.pending_grammar is None and p.structured_outputs is None
            and p.logprobs is None and p.prompt_logprobs is None and seq.num_output_tokens >= p.min_tokens)


class SpecDecoder:
    """Owns the proposer and the counters; called by the engine around each step."""

    def __init__(self, config: SpeculativeConfig, proposer: Any) -> None:
        self.config = config
        self.proposer = proposer
        self.stats = SpecStats(config.num_speculative_tokens)

    @classmethod
    def build(cls, spec: dict[str, Any] | SpeculativeConfig, engine: Any) -> SpecDecoder:
        """The decoder for ``spec`` (vLLM's dictionary), its proposer loaded for ``engine``.

        Raises:
            ValueError: invalid settings, tensor parallelism, a pooling engine, or a draft model
                that does not fit the target (vocabulary).
        """
        config = spec if isinstance(spec, SpeculativeConfig) else SpeculativeConfig.from_dict(spec)
        if engine.config.tensor_parallel_size > 1:
            raise ValueError("Speculative decoding does not run with tensor parallelism yet; drop "
                             "--speculative-config or use --tensor-parallel-size 1.")
        if engine.pooling is not None:
            raise ValueError("Speculative decoding is for text generation; a pooling model takes no "
                             "--speculative-config.")
        if config.method == "ngram":
            proposer: Any = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)
        else:
            from heron.engine.spec.draft_model import DraftModelProposer

            proposer = DraftModelProposer.load(config.model, engine)
        log.info("speculative decoding: %s, %d tokens per step", config.method, config.num_speculative_tokens)
        return cls(config, proposer)

    def propose(self, running: list[Sequence], max_model_len: int) -> dict[int, list[int]]:
        """Draft tokens per seq id for the running sequences that may speculate (others absent)."""
        limit = self.config.disable_by_batch_size
        if not running or (limit is not None and len(running) >= limit):
            return {}
        seqs, ks = [], []
        for seq in running:
            if not may_speculate(seq):
                continue
            room = min(self.config.num_speculative_tokens, seq.params.max_tokens - seq.num_output_tokens - 1,
                       max_model_len - seq.num_tokens - 1)
            if room > 0:
                seqs.append(seq)
                ks.append(room)
        if not seqs:
            return {}
        drafts = self.proposer.propose(seqs, ks)
        return {seq.seq_id: d for seq, d in zip(seqs, drafts, strict=True) if d}

    def fill(self, sched: Any, running: list[Sequence]) -> None:
        """After scheduling, before the forward: a proposer that drafts into the allocated slots (a
        draft model) writes its drafts over the placeholders now."""
        fill = getattr(self.proposer, "fill", None)
        if fill is None:
            return
        items = [item for item in sched.scheduled if item.num_draft_tokens]
        if items:
            fill(items)
        if len(self.proposer.computed) > 2 * len(running) + 64:
            self.proposer.forget({seq.seq_id for seq in running})

    def finish(self, engine: Any, sched: Any, logits: Any, touched: dict[str, Any]) -> None:
        """After the forward: verify every scheduled sequence's drafts and keep what is accepted."""
        verified = getattr(self.proposer, "verified", None)
        for item in sched.scheduled:
            k = item.num_draft_tokens
            if not k:
                continue
            seq = item.seq
            base = seq.num_tokens - k
            drafts = seq.token_ids[base:]
            del seq.token_ids[base:]  # the drafts never stay: accepted ones are appended again below
            if seq.finished:  # its request failed earlier in this step
                continue
            try:
                verdict = verify_drafts(engine.sampler, seq, drafts, logits.full[seq.seq_id])
                self.stats.record(k, verdict.accepted)
                self._keep(engine, seq, verdict.tokens, verdict.accepted)
                if verified is not None:
                    verified(seq, base, k, verdict.accepted)
            except Exception as err:  # noqa: BLE001 - that request alone fails
                engine._fail(seq.request, err, "verifying draft tokens")  # noqa: SLF001
            touched[seq.request.request_id] = seq.request

    @staticmethod
    def _keep(engine: Any, seq: Sequence, tokens: list[int], accepted: int) -> None:
        """Append ``tokens`` one by one (stopping where a stop condition says), then mark the KV of
        the accepted drafts computed and commit newly full blocks (accepted tokens only)."""
        base = seq.num_tokens
        stopped = False
        for token in tokens:
            engine.num_generated_tokens += 1
            if append_token(seq, token, None, None, eos_token_ids=engine.eos_token_ids,
                            max_model_len=engine.max_model_len,
                            new_matcher=lambda compiled: engine.grammar.new_matcher(compiled)):
                stopped = True
                break
        # computed: the last token before the drafts and the accepted drafts that were kept
        seq.num_computed_tokens = min(base + accepted, seq.num_tokens - 1)
        engine.blocks.commit(seq)
        if stopped:
            engine.scheduler.remove(seq)
            seq.status = SequenceStatus.FINISHED
