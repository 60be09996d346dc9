"""The offline API, mirroring vLLM's: ``LLM(model=...).generate(prompts, params)`` and ``.chat()``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence as Seq
from typing import Any

from tqdm.auto import tqdm

from heron.engine.config import EngineConfig
from heron.engine.engine import LLMEngine
from heron.engine.outputs import RequestOutput, merge_output
from heron.engine.sampling_params import SamplingParams

__all__ = ("LLM",)

PromptType = str | list[int] | dict[str, Any]

log = logging.getLogger("heron.engine")


class LLM:
    """Load a model once and generate for batches of prompts with continuous batching.

    Args:
        model: an HF checkpoint directory, a ``.gguf`` file, a model id in the local HF cache,
            or None for the bundled SmolLM2-135M-Instruct.
        **kwargs: :class:`heron.engine.config.EngineConfig` fields (``dtype``, ``max_model_len``,
            ``max_num_seqs``, ``kv_cache_memory_bytes``, ``enable_prefix_caching``, ...).
    """

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        self.engine = LLMEngine(EngineConfig(model=model, **kwargs))
        self._ids = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(
        self,
        prompts: PromptType | Seq[PromptType],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        priority: list[int] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text, token ids, or ``{"prompt_token_ids": [...]}``), in order.

        Returns one cumulative :class:`RequestOutput` per prompt (vLLM's shape: whole text, token
        ids and logprobs of each sample). A request the engine failed to handle is returned with
        ``error`` set and ``finish_reason="error"``; the others are unaffected.
        """
        if isinstance(prompts, str | dict) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params.")
        order: list[str] = []
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            rid = str(next(self._ids))
            text, ids = prompt, None
            if isinstance(prompt, dict):
                text, ids = prompt.get("prompt"), prompt.get("prompt_token_ids")
            self.engine.add_request(rid, text, p, prompt_token_ids=ids,
                                    priority=priority[i] if priority else 0)
            order.append(rid)
        return self._run(order, use_tqdm)

    def _run(self, order: list[str], use_tqdm: bool) -> list[RequestOutput]:
        """Step until every request is done; merge each request's deltas into one cumulative output."""
        partial: dict[str, _Cumulative] = {}
        done: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(order), desc="Generating", unit="req", disable=not use_tqdm)
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    acc = partial.get(out.request_id)
                    if acc is None:
                        acc = partial[out.request_id] = _Cumulative(out)
                    else:
                        acc.add(out)
                    if out.finished:
                        done[out.request_id] = acc.result()
                        del partial[out.request_id]
                        if out.error is not None:
                            log.error("request %s failed: %s", out.request_id, out.error)
                        bar.update(1)
        except BaseException:
            for rid in order:
                self.engine.abort(rid)
            raise
        finally:
            bar.close()
        return [done[rid] for rid in order]

    def chat(
        self,
        messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
        sampling_params: SamplingParams | None = None,
        *,
        use_tqdm: bool = True,
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[RequestOutput]:
        """Render each conversation with the model's chat template and generate replies."""
        from heron.chat.template import render_chat

        tok = self.engine.tokenizer
        template = chat_template or getattr(tok, "chat_template", None)
        if not template:
            raise ValueError("The model has no chat template; pass chat_template=...")
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        prompts = []
        for conv in conversations:
            text = render_chat(template, conv, tools=tools, add_generation_prompt=add_generation_prompt,
                               continue_final_message=continue_final_message,
                               special_tokens={"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""},
                               **(chat_template_kwargs or {}))
            prompts.append({"prompt": text, "prompt_token_ids": tok.encode(text, add_special_tokens=False)})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)


class _Cumulative:
    """One request's deltas merged into vLLM's cumulative shape (text joined once, at the end)."""

    __slots__ = ("out", "pieces")

    def __init__(self, first: RequestOutput) -> None:
        self.out = first
        self.pieces: dict[int, list[str]] = {c.index: [c.text] for c in first.outputs}

    def add(self, delta: RequestOutput) -> None:
        for comp in delta.outputs:
            self.pieces.setdefault(comp.index, []).append(comp.text)
            comp.text = ""
        merge_output(self.out, delta)

    def result(self) -> RequestOutput:
        for comp in self.out.outputs:
            comp.text = "".join(self.pieces.get(comp.index, ()))
        return self.out
