"""Batched sampling: every sampling row of a step in a handful of tensor operations.

Order (vLLM's): logprobs of the raw model distribution are taken first; then logit bias,
allowed/bad tokens and ``min_tokens`` masking; repetition/presence/frequency penalties; the
structured-output bitmask; then greedy rows take the argmax and random rows are scaled by
temperature, filtered by top-k / top-p / min-p and sampled with the exponential-race trick
(``argmax(p / q)``, ``q ~ Exp(1)``), which lets a seeded request draw its noise from its own
generator: its samples do not depend on what else shares the batch. A batch of plain greedy
rows (no logprobs, bias, masks, penalties or grammar) skips all of it: one argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from heron.engine.outputs import Logprob
from heron.engine.request import Sequence
from heron.layers.fused_ops import argmax_rows

__all__ = ("Sampler", "SamplerOutput")


def _argmax_only(seq: Sequence) -> bool:
    """Whether ``seq``'s token is the plain argmax of its logits: greedy, no logprobs, nothing that edits them."""
    p = seq.params
    return p.greedy and p.logprobs is None and not _changes_logits(seq)


def _changes_logits(seq: Sequence) -> bool:
    """Whether sampling ``seq`` writes into its logits row (bias, masks, penalties, grammar)."""
    p = seq.params
    return bool(p.logit_bias or p.allowed_token_ids is not None or p._bad_words_ids or p.min_tokens
                or p.needs_penalties or seq.matcher is not None)


@dataclass(slots=True)
class SamplerOutput:
    token_ids: list[int]
    #: per row: {token_id: Logprob} (sampled token + top-k), or None when not asked
    logprobs: list[dict[int, Logprob] | None]
    sampled_logprobs: list[float | None]


class Sampler:
    """Samples the next token of each row from ``[rows, vocab]`` logits."""

    def __init__(self, vocab_size: int, eos_token_ids: list[int], seed: int = 0, grammar: Any = None,
                 device: torch.device | str = "cpu") -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)  # where the logits are
        self.grammar = grammar  # heron.structured.GrammarBackend, when structured outputs are on

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        """Sample one token per row of ``logits`` (``[len(seqs), vocab]``), which is left unchanged
        (masks and penalties apply to a float32 copy), so a failed batch can be redone row by row."""
        if all(map(_argmax_only, seqs)):
            # the common greedy batch: no float copy, softmax, sort or noise; argmax of the raw logits
            # (a float32 copy would hold the same values, so the same argmax)
            token_list = argmax_rows(logits).tolist()
            return SamplerOutput(token_list, [None] * len(seqs), [None] * len(seqs))
        source = logits
        logits = logits.float()
        if logits.data_ptr() == source.data_ptr() and any(map(_changes_logits, seqs)):
            logits = logits.clone()  # already float32: copy only when a row is masked in place
        rows = len(seqs)
        params = [s.params for s in seqs]
        want_lp = [p.logprobs is not None for p in params]
        raw_lp = torch.log_softmax(logits, dim=-1) if any(want_lp) else None

        self._mask_and_bias(logits, seqs)
        pen_rows = [i for i, p in enumerate(params) if p.needs_penalties]
        if pen_rows:
            self._penalties(logits, [seqs[i] for i in pen_rows], pen_rows)
        if self.grammar is not None:
            g_rows = [i for i, s in enumerate(seqs) if s.matcher is not None]
            if g_rows:
                self.grammar.apply(logits, g_rows, [seqs[i].matcher for i in g_rows])

        greedy = [p.greedy for p in params]
        tokens = torch.empty(rows, dtype=torch.long, device=logits.device)
        g_idx = [i for i in range(rows) if greedy[i]]
        r_idx = [i for i in range(rows) if not greedy[i]]
        if g_idx:
            sel = logits if len(g_idx) == rows else logits[g_idx]
            tokens[g_idx] = sel.argmax(dim=-1)
        if r_idx:
            tokens[r_idx] = self._random(logits[r_idx] if len(r_idx) < rows else logits,
                                         [seqs[i] for i in r_idx])
        token_list = tokens.tolist()
        out_lp: list[dict[int, Logprob] | None] = [None] * rows
        sampled: list[float | None] = [None] * rows
        if raw_lp is not None:
            lp_rows = [i for i in range(rows) if want_lp[i]]
            k = max(params[i].logprobs for i in lp_rows)
            sub = raw_lp[lp_rows]
            chosen = tokens[lp_rows]
            chosen_lp = sub.gather(1, chosen[:, None])[:, 0]
            ranks = (sub > chosen_lp[:, None]).sum(dim=-1) + 1
            top_v, top_i = (sub.topk(k, dim=-1) if k > 0 else (None, None))
            chosen_lp_l, ranks_l = chosen_lp.tolist(), ranks.tolist()
            top_v_l = top_v.tolist() if top_v is not None else None
            top_i_l = top_i.tolist() if top_i is not None else None
            for j, i in enumerate(lp_rows):
                d = {token_list[i]: Logprob(chosen_lp_l[j], ranks_l[j])}
                for r in range(params[i].logprobs):
                    tid = top_i_l[j][r]
                    if tid not in d:
                        d[tid] = Logprob(top_v_l[j][r], r + 1)
                out_lp[i] = d
                sampled[i] = chosen_lp_l[j]
        return SamplerOutput(token_list, out_lp, sampled)

    # -- processing -------------------------------------------------------------------------

    def _mask_and_bias(self, logits: torch.Tensor, seqs: list[Sequence]) -> None:
        neg = float("-inf")
        dev = logits.device
        for i, seq in enumerate(seqs):
            p = seq.params
            if p.logit_bias:
                ids = torch.tensor([t for t in p.logit_bias if 0 <= t < logits.shape[1]], dtype=torch.long, device=dev)
                vals = torch.tensor([v for t, v in p.logit_bias.items() if 0 <= t < logits.shape[1]], device=dev)
                logits[i, ids] += vals
            if p.allowed_token_ids is not None:
                keep = torch.full((logits.shape[1],), neg, device=dev)
                keep[torch.tensor(p.allowed_token_ids, dtype=torch.long, device=dev)] = 0.0
                logits[i] += keep
            if p._bad_words_ids:
                out = seq.output_ids  # as vLLM: a word's prefix is matched in the output only
                for word in p._bad_words_ids:
                    prefix = word[:-1]
                    if not prefix or (len(out) >= len(prefix) and out[len(out) - len(prefix):] == prefix):
                        logits[i, word[-1]] = neg
            if seq.num_output_tokens < p.min_tokens and not (seq.matcher is not None and seq.matcher.is_completed()):
                banned = list(p.stop_token_ids) + ([] if p.ignore_eos else self.eos_token_ids)
                if banned:
                    logits[i, torch.tensor(banned, dtype=torch.long, device=dev)] = neg

    def _penalties(self, logits: torch.Tensor, seqs: list[Sequence], rows: list[int]) -> None:
        vocab, dev = logits.shape[1], logits.device
        outs = [s.output_ids for s in seqs]
        width = max(1, max(len(o) for o in outs))
        out_ids = torch.full((len(seqs), width), vocab, dtype=torch.long)  # pad -> extra column
        for j, o in enumerate(outs):
            if o:
                out_ids[j, : len(o)] = torch.tensor(o)
        out_ids = out_ids.to(dev)
        counts = torch.zeros(len(seqs), vocab + 1, device=dev)
        counts.scatter_add_(1, out_ids, torch.ones_like(out_ids, dtype=torch.float))
        counts = counts[:, :vocab]
        sub = logits[rows]
        rep = torch.tensor([s.params.repetition_penalty for s in seqs], device=dev)[:, None]
        if (rep != 1.0).any():
            prompts = [s.token_ids[: s.num_prompt_tokens] for s in seqs]
            pw = max(1, max(len(p) for p in prompts))
            p_ids = torch.full((len(seqs), pw), vocab, dtype=torch.long)
            for j, p in enumerate(prompts):
                p_ids[j, : len(p)] = torch.tensor(p)
            seen = torch.zeros(len(seqs), vocab + 1, dtype=torch.bool, device=dev)
            seen.scatter_(1, p_ids.to(dev), True)
            seen = seen[:, :vocab] | (counts > 0)
            sub = torch.where(seen, torch.where(sub > 0, sub / rep, sub * rep), sub)
        freq = torch.tensor([s.params.frequency_penalty for s in seqs], device=dev)[:, None]
        pres = torch.tensor([s.params.presence_penalty for s in seqs], device=dev)[:, None]
        sub = sub - freq * counts - pres * (counts > 0).float()
        logits[rows] = sub

    def _random(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        temps = torch.tensor([s.params.temperature for s in seqs], device=logits.device)[:, None]
        logits = logits / temps
        f_rows = [j for j, s in enumerate(seqs) if s.params.needs_filters]
        if f_rows:
            sub = logits[f_rows] if len(f_rows) < len(seqs) else logits
            logits[f_rows] = self._filter(sub, [seqs[j].params for j in f_rows])
        probs = torch.softmax(logits, dim=-1)
        noise = torch.empty_like(probs)
        shared = [j for j, s in enumerate(seqs) if s.generator is None]
        if shared:
            if len(shared) == len(seqs):
                noise.exponential_(generator=self.generator)
            else:
                noise[shared] = torch.empty(len(shared), probs.shape[1], device=probs.device).exponential_(
                    generator=self.generator)
        for j, s in enumerate(seqs):
            if s.generator is not None:
                noise[j].exponential_(generator=s.generator)
        return (probs / noise).argmax(dim=-1)

    @staticmethod
    def _filter(logits: torch.Tensor, params: list[Any]) -> torch.Tensor:
        vocab, dev = logits.shape[1], logits.device
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=dev)[:, None]
        ranks = torch.arange(vocab, device=dev)[None, :]
        drop = ranks >= top_k
        # vLLM's order: min_p (relative to the most likely token, so the same under top-k), then
        # top-p over what is left, renormalised
        probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
        min_p = torch.tensor([p.min_p for p in params], device=dev)[:, None]
        drop |= probs < min_p * probs[:, :1]
        probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
        top_p = torch.tensor([p.top_p for p in params], device=dev)[:, None]
        before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
        drop |= before >= top_p
        drop[:, 0] = False  # always keep the most likely token
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(logits).scatter_(1, order, sorted_logits)
