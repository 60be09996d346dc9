"""Incremental detokenization and stop strings, per sample and per request.

Tokens are decoded in a short sliding window (``prefix_offset:read_offset`` is the context that
keeps merges such as leading spaces right; ``read_offset:`` is new), so each step costs a couple
of small ``decode`` calls, not a decode of the whole output. Text that ends in an incomplete
UTF-8 sequence is held until the next token completes it. Text that could still turn into a stop
string is held back so that emitted text never has to be taken back.

Only text not yet handed out is kept (:meth:`IncrementalDetokenizer.take` hands it out): a stop
string can only start inside held-back text, so the search never needs what was handed out, and
no step copies the whole output.

:class:`RequestDetokenizer` applies that to a request's token deltas (the engine's outputs carry
token ids only): it fills in each sample's text, cuts a sample at the token that completes a stop
string (its later tokens and logprobs are dropped) and says which samples a stop string ended, so
that their owner stops them in the engine. The engine-process front-end runs it on what arrives
from the engine; an in-process engine runs it on its own outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heron.engine.outputs import CompletionOutput, RequestOutput
    from heron.engine.sampling_params import SamplingParams

__all__ = ("IncrementalDetokenizer", "RequestDetokenizer")

_INITIAL_WINDOW = 5  # context tokens of the prompt that seed the first output merges


class IncrementalDetokenizer:
    """Turns one sample's token ids into text, finding stop strings as it goes."""

    __slots__ = ("tokenizer", "skip_special", "spaces_between", "stop", "include_stop", "max_stop",
                 "tokens", "prefix_offset", "read_offset", "text", "num_taken", "stopped_at")

    def __init__(self, tokenizer: Any, prompt_ids: list[int], *, skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True, stop: list[str] | None = None,
                 include_stop_str_in_output: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special_tokens
        self.spaces_between = spaces_between_special_tokens
        self.stop = list(stop or [])
        self.include_stop = include_stop_str_in_output
        self.max_stop = max((len(s) for s in self.stop), default=0)
        context = list(prompt_ids[-_INITIAL_WINDOW:])
        if self.skip_special:
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            context = [t for t in context if t not in special]
        self.tokens = context
        self.prefix_offset = 0
        self.read_offset = len(context)
        self.text = ""  # decoded text not handed out yet
        self.num_taken = 0  # characters handed out by take()
        self.stopped_at: str | None = None  # the stop string found, if any

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special,
                                     spaces_between_special_tokens=self.spaces_between) if ids else ""

    def add(self, token_id: int) -> str | None:
        """Append one token; returns the stop string if the text now contains one (text cut there)."""
        self.tokens.append(token_id)
        prefix = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        full = self._decode(self.tokens[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix):] if full.startswith(prefix) else full[len(prefix):]
            before = len(self.text)
            self.text += new
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            if self.stop:
                return self._find_stop(before)
        return None

    def _find_stop(self, before: int) -> str | None:
        start = max(0, before - self.max_stop + 1)
        best: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, start)
            if at != -1 and (best is None or at < best[0]):
                best = (at, s)
        if best is None:
            return None
        at, s = best
        self.text = self.text[: at + len(s)] if self.include_stop else self.text[:at]
        self.stopped_at = s
        return s

    def take(self, finished: bool) -> str:
        """Hand out the new text safe to show: all of it when finished, else without a possible
        stop-string prefix at the end (that part stays for the next call)."""
        text = self.text
        hold = 0
        if not finished and self.stop and self.stopped_at is None:
            for s in self.stop:
                for k in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        hold = max(hold, k)
                        break
        out, self.text = (text[: len(text) - hold], text[len(text) - hold :]) if hold else (text, "")
        self.num_taken += len(out)
        return out


class RequestDetokenizer:
    """One request's text: turns its token deltas into text deltas and finds its stop strings.

    Args:
        tokenizer: the model's tokenizer.
        prompt_ids: the prompt (its last tokens seed the first merges).
        params: the request's sampling parameters (stop strings, special-token handling, ``n``).
        eos_token_ids: the model's end-of-sequence ids (like a stop token id, their text is not shown).
    """

    __slots__ = ("tokenizer", "prompt_ids", "params", "eos", "samples", "ended")

    def __init__(self, tokenizer: Any, prompt_ids: list[int], params: SamplingParams,
                 eos_token_ids: list[int] | tuple[int, ...] = ()) -> None:
        self.tokenizer, self.prompt_ids, self.params = tokenizer, prompt_ids, params
        self.eos = frozenset(eos_token_ids)
        self.samples: dict[int, IncrementalDetokenizer] = {}
        self.ended: set[int] = set()  # samples whose last delta went out

    @property
    def finished(self) -> bool:
        return len(self.ended) >= self.params.n

    def process(self, out: RequestOutput) -> list[int] | None:
        """Fill in ``out``'s text in place; returns the samples a stop string ended in this output
        while the engine still runs them (stop them there), or None when ``out`` is about samples
        that already ended (drop it)."""
        if self.finished:
            return None
        stopped: list[int] = []
        kept = []
        for comp in out.outputs:
            if comp.index in self.ended:
                continue
            if self._sample(comp):
                stopped.append(comp.index)
            if comp.finish_reason is not None:
                self.ended.add(comp.index)
            kept.append(comp)
        out.outputs = kept
        out.finished = out.finished or self.finished
        return stopped

    def _sample(self, comp: CompletionOutput) -> bool:
        """Detokenize one sample's delta; True when a stop string ended it here (engine still running)."""
        detok = self.samples.get(comp.index)
        if detok is None:
            p = self.params
            detok = self.samples[comp.index] = IncrementalDetokenizer(
                self.tokenizer, self.prompt_ids, skip_special_tokens=p.skip_special_tokens,
                spaces_between_special_tokens=p.spaces_between_special_tokens, stop=p.stop,
                include_stop_str_in_output=p.include_stop_str_in_output)
        ids = comp.token_ids
        count = len(ids)
        if count and comp.finish_reason == "stop" and self._stop_token(ids[-1]):
            count -= 1  # an EOS or stop token id ends the sample without showing its text
        found = None
        for i in range(count):
            found = detok.add(ids[i])
            if found is not None:
                self._cut(comp, i + 1)
                break
        engine_running = comp.finish_reason is None
        if found is not None:
            comp.finish_reason, comp.stop_reason = "stop", found
        comp.text = detok.take(comp.finish_reason is not None)
        return found is not None and engine_running

    def _stop_token(self, token: int) -> bool:
        return token in self.params.stop_token_ids or (token in self.eos and not self.params.ignore_eos)

    @staticmethod
    def _cut(comp: CompletionOutput, keep: int) -> None:
        """Drop the tokens (and their logprobs) after the one that completed a stop string."""
        dropped = comp.token_ids[keep:]
        comp.token_ids = comp.token_ids[:keep]
        if comp.logprobs is not None:
            lost = comp.logprobs[keep:]
            comp.logprobs = comp.logprobs[:keep]
            if comp.cumulative_logprob is not None:
                comp.cumulative_logprob -= sum(lp[t].logprob for t, lp in zip(dropped, lost, strict=False) if t in lp)
