"""The offline API, mirroring vLLM's: ``LLM(model=...).generate(prompts, params)`` and ``.chat()``; on a
pooling model ``.encode()``, ``.embed()``, ``.classify()`` and ``.score()``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence as Seq
from typing import Any

from tqdm.auto import tqdm

from heron.engine.beam_search import BeamSearchOutput, BeamSearchParams, run_beam_search
from heron.engine.config import EngineConfig
from heron.engine.engine import LLMEngine
from heron.engine.outputs import RequestOutput, merge_output
from heron.engine.pooling_outputs import (
    ClassificationRequestOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
    ScoringRequestOutput,
)
from heron.engine.pooling_params import PoolingParams
from heron.engine.sampling_params import SamplingParams
from heron.lora import LoRARequest

__all__ = ("LLM",)

PromptType = str | list[int] | dict[str, Any]

log = logging.getLogger("heron.engine")


class LLM:
    """Load a model once and generate for batches of prompts with continuous batching.

    Args:
        model: an HF checkpoint directory, a ``.gguf`` file, a model id in the local HF cache,
            or None for the bundled SmolLM2-135M-Instruct.
        **kwargs: :class:`heron.engine.config.EngineConfig` fields (``dtype``, ``max_model_len``,
            ``max_num_seqs``, ``kv_cache_memory_bytes``, ``enable_prefix_caching``,
            ``tensor_parallel_size``, ``device``, ...). With ``tensor_parallel_size`` > 1 worker
            processes hold the other shards: call :meth:`shutdown` (or use ``with LLM(...)``) to
            stop them before building another tensor-parallel ``LLM`` in the same process.
    """

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        self.engine = LLMEngine(EngineConfig(model=model, **kwargs))
        self._ids = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def shutdown(self) -> None:
        """Stop the engine's tensor-parallel workers (``tensor_parallel_size`` > 1); also done at exit."""
        self.engine.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def generate(
        self,
        prompts: PromptType | Seq[PromptType],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        priority: list[int] | None = None,
        lora_request: LoRARequest | Seq[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text, token ids, or ``{"prompt_token_ids": [...]}``), in order.

        ``lora_request`` runs every prompt through one adapter, or each prompt through its own
        (a list, None for the base model); needs ``LLM(..., enable_lora=True)``.

        Returns one cumulative :class:`RequestOutput` per prompt (vLLM's shape: whole text, token
        ids and logprobs of each sample). A request the engine failed to handle is returned with
        ``error`` set and ``finish_reason="error"``; the others are unaffected.
        """
        prompts = _as_list(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params.")
        loras = (list(lora_request) if isinstance(lora_request, list | tuple)
                 else [lora_request] * len(prompts))
        if len(loras) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(loras)} LoRA requests.")
        return self._run(self._submit(prompts, params, priority, loras), use_tqdm)

    def _submit(self, prompts: list[PromptType], params: Seq[SamplingParams | PoolingParams],
                priority: list[int] | None = None, loras: list[LoRARequest | None] | None = None) -> list[str]:
        order: list[str] = []
        try:
            for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
                rid = str(next(self._ids))
                text, ids = prompt, None
                if isinstance(prompt, dict):
                    text, ids = prompt.get("prompt"), prompt.get("prompt_token_ids")
                self.engine.add_request(rid, text, p, prompt_token_ids=ids, priority=priority[i] if priority else 0,
                                        lora_request=loras[i] if loras else None)
                order.append(rid)
        except BaseException:
            for rid in order:  # a rejected prompt takes the batch's earlier requests with it
                self.engine.abort(rid)
            raise
        return order

    def _run(self, order: list[str], use_tqdm: bool) -> list[Any]:
        """Step until every request is done; merge each request's deltas into one cumulative output."""
        partial: dict[str, _Cumulative] = {}
        done: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(order), desc="Generating", unit="req", disable=not use_tqdm)
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if isinstance(out, PoolingRequestOutput):
                        done[out.request_id] = out
                        if out.error is not None:
                            log.error("request %s failed: %s", out.request_id, out.error)
                        bar.update(1)
                        continue
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

    def beam_search(self, prompts: PromptType | Seq[PromptType], params: BeamSearchParams,
                    lora_request: LoRARequest | None = None, use_tqdm: bool = False,
                    concurrency_limit: int | None = None) -> list[BeamSearchOutput]:
        """vLLM's ``LLM.beam_search``: the ``params.beam_width`` best beams of every prompt, best first.

        The beams and their scores are those of transformers' ``generate(num_beams=beam_width,
        do_sample=False)`` (see :mod:`heron.engine.beam_search`). Each sequence's ``tokens`` are the
        prompt's then the beam's, and ``text`` decodes them all, as vLLM's do. ``concurrency_limit``
        prompts (default: all) are searched together, their beams sharing each step's forward.
        """
        tok = self.engine.tokenizer
        ids = []
        for prompt in _as_list(prompts):
            if isinstance(prompt, dict):
                prompt = prompt.get("prompt_token_ids") or prompt["prompt"]
            ids.append(tok.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt])
        chunk = concurrency_limit or max(1, len(ids))
        outputs: list[BeamSearchOutput] = []
        for start in tqdm(range(0, len(ids), chunk), desc="Beam search", disable=not use_tqdm):
            outputs += run_beam_search(self.engine, ids[start: start + chunk], params,
                                       request_prefix=f"beam-{next(self._ids)}", lora_request=lora_request)
        return outputs

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


    # -- pooling models ---------------------------------------------------------------------

    def encode(
        self,
        prompts: PromptType | Seq[PromptType],
        pooling_params: PoolingParams | Seq[PoolingParams] | None = None,
        *,
        truncate_prompt_tokens: int | None = None,
        use_tqdm: bool = True,
        pooling_task: str | None = None,
    ) -> list[PoolingRequestOutput]:
        """Pool every prompt (text, token ids, or ``{"prompt_token_ids": [...]}``), in order.

        ``pooling_task`` (``"embed"``, ``"classify"``, ``"encode"``; None: the model's default) and
        ``truncate_prompt_tokens`` fill the fields the params leave unset. A request the engine
        failed to handle comes back with ``error`` set and ``outputs.data`` None.

        Raises:
            ValueError: the engine does not pool (``--runner pooling``), or a task it does not serve.
        """
        prompts = _as_list(prompts)
        if pooling_params is None or isinstance(pooling_params, PoolingParams):
            params = [pooling_params or PoolingParams()] * len(prompts)
        else:
            params = list(pooling_params)
            if len(params) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(params)} pooling params.")
        changes: dict[str, Any] = {}
        if pooling_task is not None:
            changes["task"] = pooling_task
        if truncate_prompt_tokens is not None:
            changes["truncate_prompt_tokens"] = truncate_prompt_tokens
        params = [p.clone(**{k: v for k, v in changes.items() if getattr(p, k) is None}) for p in params]
        return self._run(self._submit(prompts, params), use_tqdm)

    def embed(self, prompts: PromptType | Seq[PromptType], *, truncate_prompt_tokens: int | None = None,
              use_tqdm: bool = True, pooling_params: PoolingParams | Seq[PoolingParams] | None = None,
              ) -> list[EmbeddingRequestOutput]:
        """One embedding per prompt (``outputs.embedding``); raises if a request failed."""
        outs = self.encode(prompts, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                           use_tqdm=use_tqdm, pooling_task="embed")
        return [EmbeddingRequestOutput.from_base(o) for o in outs]

    def classify(self, prompts: PromptType | Seq[PromptType], *, use_tqdm: bool = True,
                 pooling_params: PoolingParams | Seq[PoolingParams] | None = None,
                 ) -> list[ClassificationRequestOutput]:
        """Class probabilities per prompt (``outputs.probs``); raises if a request failed."""
        outs = self.encode(prompts, pooling_params, use_tqdm=use_tqdm, pooling_task="classify")
        return [ClassificationRequestOutput.from_base(o) for o in outs]

    def score(self, data_1: str | Seq[str], data_2: str | Seq[str], *, truncate_prompt_tokens: int | None = None,
              use_tqdm: bool = True, pooling_params: PoolingParams | None = None) -> list[ScoringRequestOutput]:
        """Score text pairs: one ``data_1`` against every ``data_2`` (1-to-N), or pairwise (N-to-N).

        A classifier with one label is a cross-encoder: each pair is tokenized as one input and its
        score is the sigmoid of the logit. An embedding model scores the cosine of the two embeddings.

        Raises:
            ValueError: mismatched lengths, or a model that neither embeds nor has one label.
        """
        left = [data_1] if isinstance(data_1, str) else list(data_1)
        right = [data_2] if isinstance(data_2, str) else list(data_2)
        if len(left) == 1:
            left = left * len(right)
        if len(left) != len(right) or not right:
            raise ValueError(f"score needs one text_1 or as many as text_2 ({len(left)} vs {len(right)}).")
        setup = self.engine.pooling
        if setup is None:
            raise ValueError("score needs a pooling model; start the engine with --runner pooling.")
        params = pooling_params or PoolingParams()
        if setup.default_task == "classify":
            if getattr(self.engine.model, "num_labels", 1) != 1:
                raise ValueError("score needs a cross-encoder with one label (num_labels == 1), or an embedding model.")
            tok = self.engine.tokenizer
            pairs = [{"prompt_token_ids": tok(a, b)["input_ids"]} for a, b in zip(left, right, strict=True)]
            outs = self.encode(pairs, params.clone(task="classify", use_activation=True),
                               truncate_prompt_tokens=truncate_prompt_tokens, use_tqdm=use_tqdm)
            return [ScoringRequestOutput.from_base(o) for o in outs]
        outs = self.encode(left + right, params.clone(task="embed"), truncate_prompt_tokens=truncate_prompt_tokens,
                           use_tqdm=use_tqdm)
        return [ScoringRequestOutput.from_base(_cosine(a, b)) for a, b in zip(outs[: len(left)], outs[len(left):],
                                                                                strict=True)]


def _as_list(prompts: PromptType | Seq[PromptType]) -> list[PromptType]:
    if isinstance(prompts, str | dict) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
        return [prompts]
    return list(prompts)


def _cosine(a: PoolingRequestOutput, b: PoolingRequestOutput) -> PoolingRequestOutput:
    """vLLM's shape for an embedding score: one output per pair, id ``"{id_1}_{id_2}"``."""
    import torch

    error = a.error or b.error
    data = None
    if error is None:
        data = torch.nn.functional.cosine_similarity(a.outputs.data.float(), b.outputs.data.float(), dim=-1)
    return PoolingRequestOutput(f"{a.request_id}_{b.request_id}", PoolingOutput(data),
                                a.prompt_token_ids + b.prompt_token_ids, error=error)


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
