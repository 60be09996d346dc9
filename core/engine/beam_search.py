"""Beam search outside the engine core, as vLLM runs it, scored as transformers scores it.

Each step asks the engine for one token of every live beam (one request per beam, all submitted
before any is collected, so the step is one batched forward; prefix caching makes the repeated
prompts cheap) with the top ``K`` logprobs, ``K = max(2, 1 + len(eos)) * beam_width``. Then, as
transformers' ``generate(num_beams=k, do_sample=False)``: the ``K`` best continuations of all
beams by summed logprob; those among the first ``k`` that end (an EOS token, or ``max_tokens``)
join the finished hypotheses, scored ``sum_logprobs / generated_len ** length_penalty`` (the
length counts the EOS token, not the prompt); the ``k`` best that do not end run on. The search
stops at ``max_tokens``, or earlier as ``early_stopping`` says (False: transformers' default
heuristic; True: once ``k`` hypotheses are finished; "never": only when no live beam can still
beat the worst finished one). The ``k`` best hypotheses come back, best first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from heron.engine.outputs import CompletionOutput, Logprob, RequestOutput
from heron.engine.sampling_params import SamplingParams

__all__ = ("BeamSearchOutput", "BeamSearchParams", "BeamSearchSequence", "beam_search", "run_beam_search")


@dataclass
class BeamSearchParams:
    """vLLM's beam-search parameters, plus transformers' ``early_stopping`` (default: its default).

    ``temperature`` is accepted for vLLM's API and changes nothing: the search is deterministic
    (transformers' ``do_sample=False``). ``include_stop_str_in_output`` keeps the EOS token in a
    served beam's ``token_ids``.
    """

    beam_width: int
    max_tokens: int
    ignore_eos: bool = False
    temperature: float = 0.0
    length_penalty: float = 1.0
    include_stop_str_in_output: bool = False
    early_stopping: bool | str = False

    def __post_init__(self) -> None:
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {self.beam_width}.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1 for beam search, got {self.max_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}.")


@dataclass
class BeamSearchSequence:
    """One returned beam, vLLM's shape: ``tokens`` are the prompt's then the beam's (its EOS too).

    ``score`` (heron) is the length-penalised score the beams are ranked by (transformers'
    ``sequences_scores``); ``text`` decodes ``tokens``, prompt included, as vLLM's does.
    """

    tokens: list[int]
    logprobs: list[dict[int, Logprob]]
    cum_logprob: float = 0.0
    text: str | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    score: float = 0.0


@dataclass
class BeamSearchOutput:
    """The beams of one prompt, best first (``beam_width`` of them)."""

    sequences: list[BeamSearchSequence]


@dataclass(slots=True)
class _Beam:
    tokens: list[int]  # generated tokens only
    logprob: float  # their summed logprob
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    score: float = 0.0  # finished hypotheses: logprob / len(tokens) ** length_penalty
    ended_by: int | None = None  # the EOS token that finished it (None: max_tokens)


class _Search:
    """The beam search of one prompt: ``wants()`` the live beams' token ids, ``advance()`` with their logprobs."""

    def __init__(self, prompt: list[int], params: BeamSearchParams, eos_ids: list[int], max_tokens: int) -> None:
        self.prompt, self.params, self.max_tokens = prompt, params, max_tokens
        self.width = params.beam_width
        self.eos = frozenset(() if params.ignore_eos else eos_ids)
        self.keep = max(2, 1 + len(self.eos)) * self.width  # transformers' beams_to_keep
        self.running = [_Beam([], 0.0)]
        self.finished: list[_Beam] = []  # best first, at most width
        self.length = 0  # tokens every live beam holds
        self.improvable = True
        self.done = False

    def wants(self) -> list[list[int]]:
        return [self.prompt + beam.tokens for beam in self.running]

    def advance(self, tops: list[dict[int, Logprob]]) -> None:
        """Extend the live beams with their top logprobs (one dict per beam, in ``running`` order)."""
        cands = sorted(((beam.logprob + lp.logprob, b, tok) for b, (beam, top) in enumerate(zip(self.running, tops,
                       strict=True)) for tok, lp in top.items()), key=lambda c: -c[0])[: self.keep]
        self.length += 1
        last = self.length >= self.max_tokens
        accepting = self.improvable and not (self.params.early_stopping is True and self._full())
        running: list[_Beam] = []
        new: list[_Beam] = []
        for rank, (total, b, tok) in enumerate(cands):
            parent = self.running[b]
            ends = last or tok in self.eos
            if ends and rank < self.width and accepting:  # only the top k may finish, as transformers
                new.append(_Beam(parent.tokens + [tok], total, parent.logprobs + [tops[b]],
                                 total / self.length ** self.params.length_penalty,
                                 tok if tok in self.eos else None))
            elif not ends and len(running) < self.width:
                running.append(_Beam(parent.tokens + [tok], total, parent.logprobs + [tops[b]]))
        self.finished = sorted(self.finished + new, key=lambda h: -h.score)[: self.width]
        self.running = running
        if running and self._full():
            # transformers' heuristic: could the best live beam still beat the worst finished one?
            lp = self.params.length_penalty
            length = self.max_tokens if self.params.early_stopping == "never" and lp > 0 else self.length
            self.improvable = self.improvable and running[0].logprob / length**lp > self.finished[-1].score
        self.done = not running or not self.improvable or (self.params.early_stopping is True and self._full())

    def _full(self) -> bool:
        return len(self.finished) >= self.width


def _step_params(search: _Search) -> SamplingParams:
    """One greedy token and the top-K raw logprobs (the engine takes logprobs before any processing)."""
    return SamplingParams(max_tokens=1, temperature=0.0, logprobs=search.keep, ignore_eos=True)


def _new_search(prompt: list[int], params: BeamSearchParams, eos_ids: list[int], max_model_len: int,
                max_logprobs: int) -> _Search:
    room = max_model_len - len(prompt)
    if room < 1:
        raise ValueError(f"The prompt ({len(prompt)} tokens) leaves no room to generate within "
                         f"max_model_len ({max_model_len}).")
    search = _Search(list(prompt), params, eos_ids, min(params.max_tokens, room))
    if search.keep > max_logprobs:
        raise ValueError(f"beam_width {params.beam_width} needs the top {search.keep} logprobs of every beam, more "
                         f"than max_logprobs ({max_logprobs}); use a smaller beam or raise --max-logprobs.")
    return search


def _top(out: RequestOutput | None) -> dict[int, Logprob]:
    if out is None:
        raise RuntimeError("a beam search step ended without an output")
    if out.error is not None:
        raise RuntimeError(f"beam search step {out.request_id!r} failed: {out.error}")
    comp = out.outputs[0] if out.outputs else None
    if comp is None or not comp.logprobs:
        raise RuntimeError(f"beam search step {out.request_id!r} returned no logprobs")
    return comp.logprobs[0]


def run_beam_search(engine: Any, prompts: list[list[int]], params: BeamSearchParams, *, request_prefix: str = "beam",
                    lora_request: Any = None) -> list[BeamSearchOutput]:
    """Beam-search every prompt (token ids) on a synchronous :class:`~heron.engine.LLMEngine` that
    no one else is stepping (the offline path: ``LLM.beam_search``).

    Each step submits every live beam of every prompt, then steps the engine until all have their
    token, so all the beams of a step share its forwards. Returns one output per prompt, in order.

    Raises:
        ValueError: a prompt leaves no room, or the beam needs more logprobs than max_logprobs.
        RuntimeError: the engine failed a beam's step.
    """
    searches = [_new_search(p, params, engine.eos_token_ids, engine.max_model_len, engine.config.max_logprobs)
                for p in prompts]
    sub = _step_params(searches[0]) if searches else None  # the same K for every prompt
    step = 0
    pending: dict[str, tuple[_Search, int]] = {}
    try:
        while live := [s for s in searches if not s.done]:
            for s in live:
                for b, ids in enumerate(s.wants()):
                    rid = f"{request_prefix}-{step}-{len(pending)}"
                    engine.add_request(rid, None, sub, prompt_token_ids=ids,
                                       lora_request=lora_request)
                    pending[rid] = (s, b)
            tops: dict[int, list[dict[int, Logprob] | None]] = {id(s): [None] * len(s.running) for s in live}
            while pending and engine.has_unfinished():
                for out in engine.step():
                    if out.request_id in pending and out.finished:
                        s, b = pending.pop(out.request_id)
                        tops[id(s)][b] = _top(out)
            if pending:
                raise RuntimeError(f"the engine dropped {len(pending)} beam search steps")
            for s in live:
                s.advance(tops[id(s)])
            step += 1
    finally:
        for rid in pending:
            engine.abort(rid)
    return _offline_outputs(searches, engine.tokenizer)


async def beam_search(engine: Any, prompt_ids: list[int], params: BeamSearchParams, request_id: str, *,
                      priority: int = 0, cache_salt: str | None = None, lora_request: Any = None) -> RequestOutput:
    """Beam-search one prompt through an :class:`~heron.engine.AsyncEngine` (the served path).

    Every step submits one 1-token request per live beam (ids ``{request_id}-beam{step}-{i}``) and
    awaits them together, so the engine batches them into one step; cancelling the call aborts them.

    Returns:
        One finished :class:`RequestOutput` (vLLM's shape for beam search): ``outputs`` holds one
        :class:`CompletionOutput` per beam, best first (``index`` 0..beam_width-1), each with
        ``token_ids`` (the EOS only with ``include_stop_str_in_output``), ``text`` (decoded without
        the EOS, special tokens skipped), ``cumulative_logprob`` (the EOS's logprob included),
        ``logprobs`` (per token, the step's top-K dict, ranks from the engine), ``finish_reason``
        ("stop" at an EOS, else "length") and ``stop_reason`` (the EOS id). ``extra["beam_scores"]``
        holds the length-penalised scores the beams are ranked by.

    Raises:
        ValueError: the prompt leaves no room, or the beam needs more logprobs than max_logprobs.
        RequestRejectedError, RequestFailedError, EngineBusyError, EngineDeadError: from the engine.
    """
    core = getattr(engine, "engine", engine)
    search = _new_search(list(prompt_ids), params, core.eos_token_ids, engine.max_model_len, core.config.max_logprobs)
    sub = _step_params(search)

    async def one(ids: list[int], rid: str) -> dict[int, Logprob]:
        last = None
        async for out in engine.generate(ids, sub, rid, priority=priority, cache_salt=cache_salt,
                                         lora_request=lora_request):
            last = out
        return _top(last)

    step = 0
    while not search.done:
        tasks = [asyncio.ensure_future(one(ids, f"{request_id}-beam{step}-{i}")) for i, ids in enumerate(search.wants())]
        try:
            tops = await asyncio.gather(*tasks)
        except BaseException:  # a failed beam or a cancelled caller: stop (and so abort) the others
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        search.advance(tops)
        step += 1
    return _served_output(request_id, list(prompt_ids), search, engine.tokenizer)


def _served_output(request_id: str, prompt_ids: list[int], search: _Search, tokenizer: Any) -> RequestOutput:
    outputs = []
    for i, hyp in enumerate(search.finished):
        ids, lps = hyp.tokens, hyp.logprobs
        if hyp.ended_by is not None and not search.params.include_stop_str_in_output:
            ids, lps = ids[:-1], lps[:-1]
        text_ids = hyp.tokens[:-1] if hyp.ended_by is not None else hyp.tokens
        outputs.append(CompletionOutput(i, tokenizer.decode(text_ids, skip_special_tokens=True), list(ids),
                                        hyp.logprob, list(lps), "stop" if hyp.ended_by is not None else "length",
                                        hyp.ended_by))
    return RequestOutput(request_id, None, prompt_ids, outputs, finished=True,
                         extra={"beam_scores": [h.score for h in search.finished]})


def _offline_outputs(searches: list[_Search], tokenizer: Any) -> list[BeamSearchOutput]:
    """vLLM's offline shape: per prompt, its beams with prompt + beam tokens and their decoded text."""
    result = []
    for s in searches:
        seqs = []
        for hyp in s.finished:
            tokens = s.prompt + hyp.tokens
            seqs.append(BeamSearchSequence(tokens, list(hyp.logprobs), hyp.logprob, tokenizer.decode(tokens),
                                           "stop" if hyp.ended_by is not None else "length", hyp.ended_by, hyp.score))
        result.append(BeamSearchOutput(seqs))
    return result
