"""Per-row bookkeeping of a step: append a sampled token and decide whether the sample stops;
record a prompt chunk's logprobs.

These run once per request row after the batched forward and sampling; the engine calls each
under its own ``try`` so that a failure here (a grammar matcher, a reasoning gate) ends that
request alone. Stop strings are found on the text, by the request's detokenizer, when the
output is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from heron.engine.outputs import Logprob
from heron.engine.request import Sequence

__all__ = ("append_token", "record_prompt_logprobs")


def append_token(seq: Sequence, token: int, lp: dict[int, Logprob] | None, sampled_lp: float | None, *,
                 eos_token_ids: list[int], max_model_len: int, new_matcher: Callable[[Any], Any]) -> bool:
    """Append ``token`` to ``seq``; set its finish and stop reasons and return True when it ends.

    Stops, in order: a structured-output matcher that is complete (or rejects the token), EOS
    (unless ``ignore_eos``), a stop token id, then ``max_tokens`` or ``max_model_len``. A sequence whose grammar waits for the end of
    reasoning gets its matcher once its own reasoning gate says so.
    """
    p = seq.params
    seq.token_ids.append(token)
    if seq.logprobs is not None and lp is not None:
        seq.logprobs.append(lp)
        seq.cumulative_logprob += sampled_lp or 0.0
    reason: str | None = None
    stop_reason: int | str | None = None
    if seq.matcher is not None:
        if not seq.matcher.accept(token) or seq.matcher.is_terminated():
            reason = "stop"  # the constrained output is complete (or cannot go on)
    elif seq.pending_grammar is not None and seq.gate.is_reasoning_end(seq.output_view):
        seq.matcher = new_matcher(seq.pending_grammar)
        seq.pending_grammar = seq.gate = None
    if reason is None:
        if token in eos_token_ids and not p.ignore_eos:
            reason = "stop"
        elif token in p.stop_token_ids:
            reason, stop_reason = "stop", token
    if reason is None and (seq.num_output_tokens >= p.max_tokens or seq.num_tokens >= max_model_len):
        reason = "length"
    if reason is None:
        return False
    seq.finish_reason, seq.stop_reason = reason, stop_reason
    return True


def record_prompt_logprobs(seq: Sequence, num_new_tokens: int, logits: torch.Tensor) -> None:
    """Append the logprobs of the prompt tokens that this chunk's logits predict.

    ``logits`` is ``[num_new_tokens, vocab]`` for the chunk starting at ``seq.num_computed_tokens``;
    row ``j`` predicts position ``start + j + 1``. Positions already recorded (a recompute after
    preemption) are skipped.
    """
    req = seq.request
    start = seq.num_computed_tokens
    k = req.params.prompt_logprobs
    targets = [start + j + 1 for j in range(num_new_tokens) if start + j + 1 < seq.num_prompt_tokens]
    rows_pos = [(pos - start - 1, pos) for pos in targets if pos >= len(req.prompt_logprobs)]
    if not rows_pos:
        return
    rows = torch.tensor([j for j, _ in rows_pos], device=logits.device)
    lps = torch.log_softmax(logits[rows].float(), dim=-1)
    chosen = torch.tensor([seq.token_ids[pos] for _, pos in rows_pos], device=logits.device)
    chosen_lp = lps.gather(1, chosen[:, None])[:, 0]
    ranks = ((lps > chosen_lp[:, None]).sum(-1) + 1).tolist()
    top_v, top_i = (lps.topk(k, dim=-1) if k else (None, None))
    top_v_l = top_v.tolist() if top_v is not None else None
    top_i_l = top_i.tolist() if top_i is not None else None
    chosen_l = chosen_lp.tolist()
    for r, (_, pos) in enumerate(rows_pos):
        d = {seq.token_ids[pos]: Logprob(chosen_l[r], ranks[r])}
        for c in range(k):
            t = top_i_l[r][c]
            if t not in d:
                d[t] = Logprob(top_v_l[r][c], c + 1)
        req.prompt_logprobs.append(d)
