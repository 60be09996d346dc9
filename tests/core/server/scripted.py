"""A scripted engine client: the server's contract without a model (text comes from a script)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Completion:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, float]] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class Output:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[Completion]
    num_cached_tokens: int = 0
    finished: bool = False


class ScriptedEngine:
    """Yields cumulative outputs token by token of ``script`` (or ``script(prompt_text)``)."""

    def __init__(self, tokenizer: Any, script: Any = "Hello there, friend.", *, max_model_len: int = 2048,
                 delay: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.script = script
        self.max_model_len = max_model_len
        self.generation_defaults: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.delay = delay
        self.active: set[str] = set()
        self.aborted: list[str] = []
        self.waiting = 0
        self.seen: list[tuple[list[int], Any]] = []

    def stats(self) -> dict[str, Any]:
        return {"num_running": len(self.active), "num_waiting": self.waiting, "kv_cache_usage": 0.0}

    def abort(self, request_id: str) -> None:
        if request_id in self.active:
            self.active.discard(request_id)
            self.aborted.append(request_id)

    async def generate(self, prompt_ids, params, request_id, *, priority=0, cache_salt=None):
        self.seen.append((list(prompt_ids), params))
        text = self.script(self.tokenizer.decode(prompt_ids)) if callable(self.script) else self.script
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        self.active.add(request_id)
        comps = [Completion(i) for i in range(params.n)]
        try:
            for step, tid in enumerate(ids):
                if request_id not in self.active:
                    return
                for c in comps:
                    c.token_ids.append(tid)
                    c.text = self.tokenizer.decode(c.token_ids)
                    if params.logprobs is not None:
                        c.logprobs = (c.logprobs or []) + [{tid: -0.5, **{(tid + k) % 100: -1.0 - k for k in range(1, params.logprobs + 1)}}]
                    stop = next((s for s in params.stop if s in c.text), None)
                    if stop is not None:
                        c.text = c.text[: c.text.index(stop)] + (stop if params.include_stop_str_in_output else "")
                        c.finish_reason, c.stop_reason = "stop", stop
                    elif step + 1 >= params.max_tokens:
                        c.finish_reason = "length"
                    elif step + 1 == len(ids):
                        c.finish_reason = "stop"
                done = all(c.finish_reason for c in comps)
                yield Output(request_id, list(prompt_ids), [Completion(**vars(c)) for c in comps], finished=done)
                if done:
                    return
                await asyncio.sleep(self.delay)
        finally:
            self.active.discard(request_id)
