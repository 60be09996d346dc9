"""The synchronous engine: add requests, ``step()`` them, read back cumulative outputs.

One ``step()`` = schedule, one batched forward over every scheduled token, one batched sample,
then bookkeeping (detokenize, stop checks, free finished sequences). Everything that varies by
model or hardware comes from a registry: the model class from ``heron.models`` by
``architectures[0]``, the attention backend from ``heron.attention_backends``, the linear kernel from
``heron.linear_kernels``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import torch

from heron.engine.block_manager import BlockManager
from heron.engine.config import (
    EngineConfig,
    available_memory_bytes,
    physical_cores,
    release_free_memory,
)
from heron.engine.detokenizer import IncrementalDetokenizer
from heron.engine.model_runner import ModelRunner
from heron.engine.outputs import Logprob, RequestOutput
from heron.engine.request import Request, Sequence, SequenceStatus
from heron.engine.sampler import Sampler
from heron.engine.sampling_params import SamplingParams
from heron.engine.scheduler import Scheduler
from heron.interfaces import ModelContext
from heron.layers import (
    allocate_kv_caches,
    apply_linear_kernel,
    attention_layers,
    select_attention_backend,
    select_linear_kernel,
)
from heron.loader import build_model, load_checkpoint, resolve_dtype
from heron.plugins import call_hook

__all__ = ("LLMEngine",)

log = logging.getLogger("heron.engine")

_DEFAULT_KV_BYTES = 512 << 20


class LLMEngine:
    """Owns the model, the KV pool, the scheduler and the sampler; not thread-safe (one caller)."""

    def __init__(self, config: EngineConfig | None = None, **kwargs: Any) -> None:
        config = config or EngineConfig(**kwargs)
        self.config = config
        threads = config.num_threads or physical_cores()
        torch.set_num_threads(threads)
        device = torch.device(config.device)
        checkpoint = load_checkpoint(config.model)
        if checkpoint.tokenizer is None:
            raise ValueError(f"{checkpoint.path} has no tokenizer; heron needs one to serve text.")
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.generation_defaults = dict(checkpoint.generation_defaults)
        self.dtype = resolve_dtype(config.dtype, device)
        hf = checkpoint.hf_config
        head_size = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
        backend_cls, why = select_attention_backend(
            config.attention_backend, device, self.dtype, head_size, getattr(hf, "sliding_window", None)
        )
        log.info("attention backend: %s", why)
        self.backend = backend_cls()
        ctx = ModelContext(dtype=self.dtype, device=device, attention_backend=self.backend)
        linear_cls, linear_why = select_linear_kernel(config.linear_kernel, device, self.dtype)
        self.model = build_model(checkpoint, ctx)
        #: the checkpoint's parameter count (tied tensors once), taken before kernels repack them
        self.num_parameters = sum({p.data_ptr(): p.numel() for p in self.model.parameters()}.values())
        converted = apply_linear_kernel(self.model, linear_cls())
        self.linear_kernel = linear_cls.name
        log.info("linear kernel: %s (%d layers converted)", linear_why, converted)
        self.vocab_size = hf.vocab_size

        model_len = checkpoint.max_model_len
        if config.max_model_len is not None and config.max_model_len > model_len:
            raise ValueError(f"max_model_len {config.max_model_len} exceeds the model's context length {model_len}.")
        self.max_model_len = config.max_model_len or model_len
        bs = config.block_size
        block_bytes = sum(
            torch.Size(backend_cls.kv_cache_shape(1, bs, layer.num_kv_heads, layer.head_size)).numel()
            for layer in attention_layers(self.model)
        ) * self.dtype.itemsize
        if config.num_kv_blocks is not None:
            num_blocks = config.num_kv_blocks
        else:
            budget = config.kv_cache_memory_bytes
            if budget is None:
                free = available_memory_bytes()
                budget = min(_DEFAULT_KV_BYTES, free // 4) if free else _DEFAULT_KV_BYTES
            num_blocks = max(1, budget // block_bytes)
        if num_blocks * bs < self.max_model_len:
            log.warning("KV cache holds %d tokens; max_model_len lowered from %d", num_blocks * bs, self.max_model_len)
            self.max_model_len = num_blocks * bs
        self.num_kv_blocks = num_blocks
        self.kv_cache_bytes = num_blocks * block_bytes
        allocate_kv_caches(self.model, backend_cls, num_blocks, bs, self.dtype, device)
        release_free_memory()  # loading left freed fp32 tensors and parse buffers in malloc's arenas
        log.info("KV cache: %d blocks x %d tokens (%.1f MiB), dtype %s, %d threads",
                 num_blocks, bs, self.kv_cache_bytes / 2**20, self.dtype, threads)

        self.eos_token_ids = list(checkpoint.eos_token_ids)
        self.blocks = BlockManager(num_blocks, bs, enable_prefix_caching=config.enable_prefix_caching)
        max_batched = config.max_num_batched_tokens or max(1024, config.max_num_seqs)
        self.scheduler = Scheduler(self.blocks, max_num_seqs=config.max_num_seqs, max_num_batched_tokens=max_batched,
                                   max_model_len=self.max_model_len, policy=config.scheduling_policy)
        self.sampler = Sampler(self.vocab_size, self.eos_token_ids, seed=config.seed)
        self.runner = ModelRunner(self.model, self.backend, bs, device)
        self.requests: dict[str, Request] = {}
        self._seq_ids = itertools.count()
        self._grammar: Any = None
        self._grammar_lock = threading.Lock()
        self.num_generated_tokens = 0
        self.num_prompt_tokens = 0
        call_hook("heron_engine_started", engine=self, config=config)

    # -- structured outputs -----------------------------------------------------------------

    @property
    def grammar(self) -> Any:
        """The xgrammar-backed grammar backend, built on first use."""
        with self._grammar_lock:
            if self._grammar is None:
                from heron.structured import GrammarBackend

                self._grammar = GrammarBackend(self.tokenizer, self.vocab_size, stop_token_ids=self.eos_token_ids)
                self.sampler.grammar = self._grammar
        return self._grammar

    def compile_grammar(self, constraint: Any) -> Any:
        """Compile (and cache) a structured-output constraint; safe from any thread.

        Raises:
            StructuredOutputError: the schema, regex, choice list or grammar is invalid.
        """
        return self.grammar.compile(constraint)

    # -- requests ---------------------------------------------------------------------------

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int] | None,
        params: SamplingParams | None = None,
        *,
        prompt_token_ids: list[int] | None = None,
        priority: int = 0,
        cache_salt: str | None = None,
        arrival_time: float | None = None,
    ) -> Request:
        """Queue a request. ``prompt`` is text (tokenized here) or token ids.

        Raises:
            ValueError: duplicate id, empty or too long prompt, token ids outside the vocabulary,
                an invalid structured-output constraint.
        """
        params = params or SamplingParams()
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(params, name)
            if value is not None and value > self.config.max_logprobs:
                raise ValueError(f"{name} must be at most max_logprobs ({self.config.max_logprobs}), got {value}.")
        if request_id in self.requests:
            raise ValueError(f"Request id {request_id!r} is already in use.")
        text = prompt if isinstance(prompt, str) else None
        if prompt_token_ids is None:
            if isinstance(prompt, str):
                prompt_token_ids = self.tokenizer.encode(prompt)
            elif prompt is not None:
                prompt_token_ids = list(prompt)
        ids = [int(t) for t in (prompt_token_ids or [])]
        if not ids:
            raise ValueError("The prompt is empty; give at least one token.")
        if any(t < 0 or t >= self.vocab_size for t in ids):
            raise ValueError(f"Prompt token ids must be in [0, {self.vocab_size}).")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"The prompt ({len(ids)} tokens) leaves no room to generate within "
                             f"max_model_len ({self.max_model_len}).")
        room = self.max_model_len - len(ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        params = params.clone(max_tokens=max_tokens)
        if params.bad_words:
            params._bad_words_ids = self._bad_words(params.bad_words)
        compiled = self.grammar.compile(params.structured_outputs) if params.structured_outputs else None
        req = Request(request_id, text, ids, params, priority=priority, cache_salt=cache_salt,
                      arrival_time=arrival_time or time.time())
        if params.prompt_logprobs is not None:
            req.prompt_logprobs = [None]
        for i in range(params.n):
            gen = None
            if params.seed is not None:
                gen = torch.Generator().manual_seed((params.seed + 0x9E3779B97F4A7C15 * i) & 0x7FFF_FFFF_FFFF_FFFF)
            detok = IncrementalDetokenizer(
                self.tokenizer, ids, skip_special_tokens=params.skip_special_tokens,
                spaces_between_special_tokens=params.spaces_between_special_tokens,
                stop=params.stop, include_stop_str_in_output=params.include_stop_str_in_output,
            )
            seq = Sequence(next(self._seq_ids), req, i, list(ids), len(ids), detok, gen)
            if params.logprobs is not None:
                seq.logprobs = []
            if compiled is not None:
                if params.reasoning_gate is not None:
                    seq.pending_grammar = compiled
                else:
                    seq.matcher = self.grammar.new_matcher(compiled)
            req.seqs.append(seq)
        self.scheduler.add(req.seqs[0])
        req.siblings_pending = req.seqs[1:]
        self.requests[request_id] = req
        self.num_prompt_tokens += len(ids)
        return req

    def _bad_words(self, words: list[str]) -> list[list[int]]:
        found: list[list[int]] = []
        for word in words:
            for variant in (word, " " + word.lstrip()):
                ids = self.tokenizer.encode(variant, add_special_tokens=False)
                if ids and ids not in found:
                    found.append(ids)
        return found

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its blocks; unknown or finished ids are ignored."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        req.aborted = True
        pending = set(map(id, req.siblings_pending))
        req.siblings_pending = []
        for seq in req.seqs:
            if not seq.finished:
                if id(seq) not in pending:
                    self.scheduler.remove(seq)
                seq.status = SequenceStatus.FINISHED
                seq.finish_reason = "abort"
        req.metrics.finished_time = time.time()
        out = req.output()
        call_hook("heron_request_finished", request_id=request_id, output=out, metrics=req.metrics)
        return out

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- the step ---------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one iteration; return the (cumulative) outputs of requests that produced tokens."""
        sched = self.scheduler.schedule()
        if not sched.scheduled:
            return []
        full_for = {
            item.seq.seq_id for item in sched.scheduled
            if item.seq.index == 0 and item.seq.request.prompt_logprobs is not None
            and item.seq.num_computed_tokens < item.seq.num_prompt_tokens
        }
        logits = self.runner.execute(sched, full_for)
        for item in sched.scheduled:
            seq = item.seq
            if seq.seq_id in full_for:
                self._prompt_logprobs(seq, item.num_new_tokens, logits.full[seq.seq_id])
            seq.num_computed_tokens += item.num_new_tokens
            self.blocks.commit(seq)
        sampling = [item.seq for item in sched.scheduled if item.samples]
        touched: dict[str, Request] = {}
        if sampling:
            out = self.sampler(logits.sample, sampling)
            now = time.time()
            for j, seq in enumerate(sampling):
                req = seq.request
                if req.siblings_pending and seq.index == 0:
                    self._fork(seq)
                self._append(seq, out.token_ids[j], out.logprobs[j], out.sampled_logprobs[j])
                if req.metrics.first_token_time is None:
                    req.metrics.first_token_time = now
                touched[req.request_id] = req
        results = []
        for rid, req in touched.items():
            out = req.output()
            if out.finished:
                req.metrics.finished_time = time.time()
                self.requests.pop(rid, None)
                call_hook("heron_request_finished", request_id=rid, output=out, metrics=req.metrics)
            results.append(out)
        return results

    def _fork(self, first: Sequence) -> None:
        """Sample 0 has computed the prompt: its siblings join, sharing its full prompt blocks."""
        req = first.request
        for sib in req.siblings_pending:
            sib.num_cached_tokens = self.blocks.fork(first, sib)
            self.scheduler.add(sib)
        req.siblings_pending = []

    def _append(self, seq: Sequence, token: int, lp: dict[int, Logprob] | None, sampled_lp: float | None) -> None:
        p = seq.params
        seq.token_ids.append(token)
        self.num_generated_tokens += 1
        if seq.logprobs is not None and lp is not None:
            seq.logprobs.append(lp)
            seq.cumulative_logprob += sampled_lp or 0.0
        reason: str | None = None
        stop_reason: int | str | None = None
        if seq.matcher is not None:
            if not seq.matcher.accept(token) or seq.matcher.is_terminated():
                reason = "stop"  # the constrained output is complete (or cannot go on)
        elif seq.pending_grammar is not None and p.reasoning_gate.is_reasoning_end(seq.output_ids):
            seq.matcher = self.grammar.new_matcher(seq.pending_grammar)
            seq.pending_grammar = None
        if reason is not None:
            seq.detok.add(token)
        elif token in self.eos_token_ids and not p.ignore_eos:
            reason = "stop"
        elif token in p.stop_token_ids:
            reason, stop_reason = "stop", token
        else:
            found = seq.detok.add(token)
            if found is not None:
                reason, stop_reason = "stop", found
        if reason is None and (seq.num_output_tokens >= p.max_tokens or seq.num_tokens >= self.max_model_len):
            reason = "length"
        if reason is not None:
            seq.finish_reason, seq.stop_reason = reason, stop_reason
            self.scheduler.remove(seq)
            seq.status = SequenceStatus.FINISHED

    def _prompt_logprobs(self, seq: Sequence, n: int, logits: torch.Tensor) -> None:
        req = seq.request
        start = seq.num_computed_tokens
        k = req.params.prompt_logprobs
        targets = [(j, start + j + 1) for j in range(n) if start + j + 1 < seq.num_prompt_tokens]
        targets = [(j, pos) for j, pos in targets if pos >= len(req.prompt_logprobs)]
        if not targets:
            return
        rows = torch.tensor([j for j, _ in targets])
        lps = torch.log_softmax(logits[rows], dim=-1)
        chosen = torch.tensor([seq.token_ids[pos] for _, pos in targets])
        chosen_lp = lps.gather(1, chosen[:, None])[:, 0]
        ranks = (lps > chosen_lp[:, None]).sum(-1) + 1
        top_v, top_i = lps.topk(k, dim=-1) if k else (None, None)
        for r, (_, pos) in enumerate(targets):
            tid = seq.token_ids[pos]
            d = {tid: Logprob(float(chosen_lp[r]), int(ranks[r]))}
            for c in range(k):
                t = int(top_i[r, c])
                if t not in d:
                    d[t] = Logprob(float(top_v[r, c]), c + 1)
            req.prompt_logprobs.append(d)

    # -- introspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "num_running": len(self.scheduler.running),
            "num_waiting": len(self.scheduler.waiting),
            "kv_cache_usage": self.blocks.usage(),
            "num_preemptions": self.scheduler.num_preemptions,
            "prefix_cache_queries": self.blocks.prefix_queries,
            "prefix_cache_hits": self.blocks.prefix_hits,
            "num_generated_tokens": self.num_generated_tokens,
            "num_prompt_tokens": self.num_prompt_tokens,
        }
