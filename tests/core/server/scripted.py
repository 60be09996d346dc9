"""A scripted engine client: the server's contract without a model (text comes from a script).

It follows the engine's output contract (:mod:`heron.engine.outputs`): every output is a delta
(new text, new token ids, new logprobs per choice), text that could still become a stop string
is held back, ``prompt_logprobs`` come once on the first output, and the last output of a choice
carries its finish reason. Text is decoded the way the real engine does, honouring
``skip_special_tokens``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from heron.engine.pooling_outputs import PoolingOutput, PoolingRequestOutput


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
    prompt_logprobs: list[dict[int, float] | None] | None = None
    error: str | None = None


@dataclass
class _Choice:
    index: int
    ids: list[int] = field(default_factory=list)
    text: str = ""  # the whole text so far (after a stop cut)
    sent: int = 0  # characters handed out
    cumulative_logprob: float = 0.0
    finish_reason: str | None = None
    stop_reason: int | str | None = None


def fake_hidden(prompt_ids: list[int], hidden_size: int) -> torch.Tensor:
    """Deterministic per-token "hidden states" [n, H]: row i depends on token i and its position."""
    ids = torch.tensor(prompt_ids, dtype=torch.float32)[:, None]  # [n, 1]
    cols = torch.arange(1, hidden_size + 1, dtype=torch.float32)[None, :]  # [1, H]
    pos = torch.arange(len(prompt_ids), dtype=torch.float32)[:, None]  # [n, 1]
    return torch.sin(ids * cols * 0.37 + pos * 0.11)  # [n, H]


def _hold(text: str, stops: list[str]) -> int:
    """Characters at the end of ``text`` that could still become a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class ScriptedEngine:
    """Yields delta outputs token by token of ``script`` (or ``script(prompt_text)``).

    With ``pooler`` (a ``PoolerConfig`` of runner "pooling") it is a pooling model instead: each
    request gets one :class:`PoolingRequestOutput` whose data is :func:`fake_hidden` pooled as the
    engine pools (mean of the rows; Matryoshka cut, then L2 norm), or class probabilities.
    """

    def __init__(self, tokenizer: Any, script: Any = "Hello there, friend.", *, max_model_len: int = 2048,
                 delay: float = 0.0, pooler: Any = None, hidden_size: int = 8, num_labels: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pooler = pooler
        self.hidden_size = hidden_size
        labels = {i: f"label_{i}" for i in range(num_labels)}
        self.hf_config = SimpleNamespace(hidden_size=hidden_size, num_labels=num_labels, id2label=labels)
        if pooler is not None:
            self.supported_tasks = ("classify",) if pooler.convert == "classify" else ("embed", "encode")
        self.script = script
        self.max_model_len = max_model_len
        self.generation_defaults: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.delay = delay
        self.active: set[str] = set()
        self.aborted: list[str] = []
        self.waiting = 0
        self.seen: list[tuple[list[int], Any]] = []
        # LoRA: adapters by name (a folder with adapter_config.json is an adapter), each generate
        # call's lora_request, and max_loras (None: stats() has no "lora" entry, as with LoRA off)
        self.loras: dict[str, Any] = {}
        self.seen_loras: list[Any] = []
        self.max_loras: int | None = None
        self._lora_of: dict[str, str] = {}  # running request id -> adapter name

    def stats(self) -> dict[str, Any]:
        stats = {"num_running": len(self.active), "num_waiting": self.waiting, "kv_cache_usage": 0.0}
        if self.max_loras is not None:
            stats["lora"] = {"max_lora": self.max_loras, "running": sorted(set(self._lora_of.values())), "waiting": []}
        return stats

    async def add_lora(self, req: Any) -> None:
        from heron.lora import LoRAError

        known = self.loras.get(req.lora_name)
        if known is not None and known.lora_path != req.lora_path:
            raise LoRAError(f"A LoRA adapter named {req.lora_name!r} is already loaded from {known.lora_path}.")
        if not (Path(req.lora_path) / "adapter_config.json").is_file():
            raise LoRAError(f"{req.lora_path} has no adapter_config.json")
        self.loras.setdefault(req.lora_name, req)

    async def remove_lora(self, name: str) -> bool:
        return self.loras.pop(name, None) is not None

    def list_loras(self) -> list[Any]:
        return list(self.loras.values())

    def abort(self, request_id: str) -> None:
        if request_id in self.active:
            self.active.discard(request_id)
            self.aborted.append(request_id)

    async def generate(self, prompt_ids, params, request_id, *, priority=0, cache_salt=None, cache_key_extra=None,
                       lora_request=None):
        self.seen.append((list(prompt_ids), params))
        self.seen_loras.append(lora_request)
        if not hasattr(params, "n"):  # PoolingParams
            await asyncio.sleep(self.delay)
            data = self._pool(list(prompt_ids), params)
            yield PoolingRequestOutput(request_id, PoolingOutput(data), list(prompt_ids), finished=True)
            return
        text = self.script(self.tokenizer.decode(prompt_ids)) if callable(self.script) else self.script
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        self.active.add(request_id)
        if lora_request is not None:
            self._lora_of[request_id] = lora_request.lora_name
        choices = [_Choice(i) for i in range(params.n)]
        prompt_lps = None
        if getattr(params, "prompt_logprobs", None) is not None:
            prompt_lps = [None] + [{t: -1.0} for t in prompt_ids[1:]]
        skip = getattr(params, "skip_special_tokens", True)
        try:
            if params.max_tokens == 0:
                comps = [Completion(c.index, finish_reason="length") for c in choices]
                yield Output(request_id, list(prompt_ids), comps, finished=True, prompt_logprobs=prompt_lps)
                return
            for step, tid in enumerate(ids):
                if request_id not in self.active:
                    return
                comps = []
                for c in choices:
                    if c.finish_reason is not None:
                        continue
                    c.ids.append(tid)
                    c.text = self.tokenizer.decode(c.ids, skip_special_tokens=skip)
                    lps = None
                    if params.logprobs is not None:
                        lps = [{tid: -0.5, **{(tid + k) % 100: -1.0 - k for k in range(1, params.logprobs + 1)}}]
                        c.cumulative_logprob += -0.5
                    stop = next((s for s in params.stop if s in c.text), None)
                    if stop is not None:
                        c.text = c.text[: c.text.index(stop)] + (stop if params.include_stop_str_in_output else "")
                        c.finish_reason, c.stop_reason = "stop", stop
                    elif step + 1 >= params.max_tokens:
                        c.finish_reason = "length"
                    elif step + 1 == len(ids):
                        c.finish_reason = "stop"
                    end = len(c.text) if c.finish_reason else len(c.text) - _hold(c.text, params.stop)
                    new_text, c.sent = c.text[c.sent : max(end, c.sent)], max(end, c.sent)
                    comps.append(Completion(c.index, new_text, [tid],
                                            c.cumulative_logprob if lps is not None else None, lps,
                                            c.finish_reason, c.stop_reason))
                done = all(c.finish_reason for c in choices)
                yield Output(request_id, list(prompt_ids), comps, finished=done,
                             prompt_logprobs=prompt_lps if step == 0 else None)
                if done:
                    return
                await asyncio.sleep(self.delay)
        finally:
            self.active.discard(request_id)
            self._lora_of.pop(request_id, None)

    def _pool(self, prompt_ids: list[int], params: Any) -> torch.Tensor:
        hidden = fake_hidden(prompt_ids, self.hidden_size)  # [n, H]
        task = params.task or ("classify" if self.pooler.convert == "classify" else "embed")
        if task == "classify":
            logits = hidden.mean(0)[: self.hf_config.num_labels] * 3  # [num_labels]
            return torch.sigmoid(logits) if logits.numel() == 1 else torch.softmax(logits, -1)
        if task == "encode":
            return hidden
        data = hidden.mean(0)  # [H]
        if params.dimensions is not None:
            data = data[: params.dimensions]
        normalize = params.normalize if params.normalize is not None else self.pooler.normalize
        return torch.nn.functional.normalize(data, dim=-1) if normalize else data
