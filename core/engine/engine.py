"""The synchronous engine: add requests, ``step()`` them, read back delta outputs.

One ``step()`` = schedule, one batched forward over every scheduled token, one batched sample,
then bookkeeping (stop checks, detokenizing, free finished sequences). Everything that varies by
model or hardware comes from a registry: the model class from ``heron.models`` by
``architectures[0]``, the attention backend from ``heron.attention_backends``, the linear kernel from
``heron.linear_kernels``. An engine either generates (``runner == "generate"``) or pools
(``runner == "pooling"``: embeddings and classification, requests with :class:`PoolingParams`,
prefill only, one :class:`PoolingRequestOutput` each).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

import torch

from heron.engine.block_manager import BlockManager
from heron.engine.config import EngineConfig, physical_cores
from heron.engine.detokenizer import RequestDetokenizer
from heron.engine.errors import TokenIdError
from heron.engine.lora import EngineLoRA
from heron.engine.model_runner import ModelRunner
from heron.engine.outputs import CompletionOutput, Logprob, RequestOutput
from heron.engine.parallel import start_tensor_parallel
from heron.engine.pooling import PoolingSetup, PoolingState, pooling_setup
from heron.engine.pooling_outputs import PoolingRequestOutput
from heron.engine.pooling_params import PoolingParams
from heron.engine.request import Request, Sequence, SequenceStatus
from heron.engine.rows import append_token, record_prompt_logprobs
from heron.engine.sampler import Sampler
from heron.engine.sampling_params import SamplingParams
from heron.engine.scheduler import Scheduler
from heron.engine.setup import load_and_size, resolve_device
from heron.engine.sleep import SleepState, sleep_engine, wake_engine
from heron.engine.spec import SpecDecoder
from heron.interfaces import PoolingModel
from heron.loader import load_checkpoint, resolve_dtype
from heron.loader.pooling_config import resolve_pooler
from heron.lora import LoRARequest
from heron.plugins import call_hook

__all__ = ("LLMEngine",)

log = logging.getLogger("heron.engine")

class LLMEngine:
    """Owns the model, the KV pool, the scheduler and the sampler; not thread-safe (one caller)."""

    def __init__(self, config: EngineConfig | None = None, **kwargs: Any) -> None:
        config = config or EngineConfig(**kwargs)
        self.config = config
        self.device = device = resolve_device(config.device)
        checkpoint = load_checkpoint(config.model, quantization=config.quantization)
        if checkpoint.tokenizer is None:
            raise ValueError(f"{checkpoint.path} has no tokenizer; heron needs one to serve text.")
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.generation_defaults = dict(checkpoint.generation_defaults)
        self.dtype = resolve_dtype(config.dtype, device)
        #: tensor parallelism (heron.engine.parallel): rank 0's handle on its workers, None at tp 1
        self.parallel = start_tensor_parallel(config, checkpoint, self.dtype, device)
        try:
            self._start(checkpoint, config, device)
        except BaseException:
            if self.parallel is not None:
                self.parallel.shutdown(kill=True)
            raise
        call_hook("heron_engine_started", engine=self, config=config)

    def _start(self, checkpoint: Any, config: EngineConfig, device: torch.device) -> None:
        threads = self.parallel.threads if self.parallel else config.num_threads or physical_cores()
        torch.set_num_threads(threads)
        loaded, pool = load_and_size(checkpoint, config, dtype=self.dtype, device=device, threads=threads,
                                     group=self.parallel)
        self.model, self.backend_cls, self.backend = loaded.model, loaded.backend_cls, loaded.backend
        self.linear_kernel, self.num_parameters = loaded.linear_kernel, loaded.num_parameters
        self._resolve_runner(checkpoint, config)
        self.vocab_size = checkpoint.hf_config.vocab_size
        self.num_kv_blocks, self.kv_cache_bytes = pool.num_blocks, pool.nbytes
        self.max_model_len, self.sliding_window = pool.max_model_len, pool.sliding_window

        self.eos_token_ids = list(checkpoint.eos_token_ids)
        bs = config.block_size
        self.blocks = BlockManager(self.num_kv_blocks, bs, enable_prefix_caching=config.enable_prefix_caching,
                                   sliding_window=self.sliding_window)
        max_batched = config.max_num_batched_tokens or max(1024, config.max_num_seqs)
        self.scheduler = Scheduler(self.blocks, max_num_seqs=config.max_num_seqs, max_num_batched_tokens=max_batched,
                                   max_model_len=self.max_model_len, policy=config.scheduling_policy,
                                   max_loras=config.max_loras if config.enable_lora else None)
        self.sampler = Sampler(self.vocab_size, self.eos_token_ids, seed=config.seed, device=device)
        if config.enable_lora and self.pooling is not None:
            raise ValueError("LoRA adapters serve generation only; start a pooling model without --enable-lora.")
        self.lora = EngineLoRA(self.model, config, dtype=self.dtype, device=device) if config.enable_lora else None
        self.model_runner = ModelRunner(self.model, self.backend, bs, device, lora=self.lora, group=self.parallel)
        self.requests: dict[str, Request] = {}
        self.sleep_state = SleepState()  # heron.engine.sleep: what /sleep gave back
        self._seq_ids = itertools.count()
        self._grammar: Any = None
        self._grammar_lock = threading.Lock()
        self.num_generated_tokens = 0
        self.num_prompt_tokens = 0
        #: speculative decoding (heron.engine.spec), None when off
        self.spec = SpecDecoder.build(config.speculative_config, self) if config.speculative_config else None

    def _resolve_runner(self, checkpoint: Any, config: EngineConfig) -> None:
        """Decide generate or pooling (``--runner``, ``--convert``, ``--pooler-config``, the checkpoint)."""
        pooler = resolve_pooler(checkpoint, config.runner, config.convert, config.pooler_config)
        if pooler.runner == "generate" and isinstance(self.model, PoolingModel):
            raise ValueError(f"{type(self.model).__name__} is a pooling model (embeddings, classification): "
                             "serve it with --runner pooling.")
        #: "generate" or "pooling"
        self.runner: str = pooler.runner
        self.pooler = pooler
        hidden_size = getattr(checkpoint.hf_config, "hidden_size", None) or 1 << 30
        self.pooling: PoolingSetup | None = (
            pooling_setup(self.model, pooler, hidden_size) if pooler.runner == "pooling" else None
        )
        log.info("runner: %s", pooler.why or pooler.runner)

    # -- structured outputs -----------------------------------------------------------------

    @property
    def grammar(self) -> Any:
        """The xgrammar-backed grammar backend, built on first use."""
        with self._grammar_lock:
            if self._grammar is None:
                from heron.structured import GrammarBackend

                self._grammar = GrammarBackend(self.tokenizer, self.vocab_size, stop_token_ids=self.eos_token_ids,
                                               limits=self.config.structured_limits)
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
        params: SamplingParams | PoolingParams | None = None,
        *,
        prompt_token_ids: list[int] | None = None,
        priority: int = 0,
        cache_salt: str | None = None,
        cache_key_extra: str | None = None,
        arrival_time: float | None = None,
        lora_request: LoRARequest | None = None,
    ) -> Request:
        """Queue a request. ``prompt`` is text (tokenized here) or token ids.

        ``params`` is a :class:`SamplingParams` on a generate engine and a :class:`PoolingParams`
        (None: the defaults) on a pooling engine.

        ``cache_salt`` and ``cache_key_extra`` (anything else that changes the KV, e.g. a LoRA
        adapter) are part of the prefix-cache keys: requests that differ in them share no block.
        ``lora_request`` runs the request through that adapter (registered on first use).

        Raises:
            TokenIdError: a prompt id or a sampling field's id is outside the vocabulary.
            ValueError: duplicate id, empty or too long prompt, an invalid structured-output
                constraint.
        """
        if isinstance(params, PoolingParams) or (params is None and self.pooling is not None):
            return self._add_pooling(request_id, prompt, params or PoolingParams(), prompt_token_ids, priority=priority,
                                     cache_salt=cache_salt, cache_key_extra=cache_key_extra, arrival_time=arrival_time)
        if self.pooling is not None:
            raise ValueError("This engine serves a pooling model (runner pooling): it embeds and classifies but "
                             "cannot generate text; start it with --runner generate.")
        params = params or SamplingParams()
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(params, name)
            if value is not None and value > self.config.max_logprobs:
                raise ValueError(f"{name} must be at most max_logprobs ({self.config.max_logprobs}), got {value}.")
        if request_id in self.requests:
            raise ValueError(f"Request id {request_id!r} is already in use.")
        ids = self._prompt_ids(prompt, prompt_token_ids, prefill_only=params.max_tokens == 0)
        room = self.max_model_len - len(ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        params = params.clone(max_tokens=max_tokens)
        if params.bad_words:
            params._bad_words_ids = self._bad_words(params.bad_words)
        params.check_token_ids(self.vocab_size)
        compiled = self.grammar.compile(params.structured_outputs) if params.structured_outputs else None
        lora_uid = self._lora_uid(lora_request)
        if lora_uid is not None:
            cache_key_extra = f"lora-{lora_uid}" + (f"|{cache_key_extra}" if cache_key_extra else "")
        req = Request(request_id, prompt if isinstance(prompt, str) else None, ids, params, priority=priority,
                      cache_salt=cache_salt, cache_key_extra=cache_key_extra, arrival_time=arrival_time or time.time(),
                      lora_uid=lora_uid)
        if self.config.detokenize:
            req.detok = RequestDetokenizer(self.tokenizer, ids, params, self.eos_token_ids)
        if params.prompt_logprobs is not None:
            req.prompt_logprobs = [None]
        for i in range(params.n):
            req.seqs.append(self._new_sequence(req, i, compiled))
        self.scheduler.add(req.seqs[0])
        req.siblings_pending = req.seqs[1:]
        self.requests[request_id] = req
        self.num_prompt_tokens += len(ids)
        return req

    # -- LoRA adapters ----------------------------------------------------------------------

    def _lora_uid(self, lora_request: LoRARequest | None) -> int | None:
        if lora_request is None:
            return None
        if self.lora is None:
            raise ValueError("LoRA is not enabled; start with --enable-lora (offline: LLM(..., enable_lora=True)).")
        return self.lora.uid_for(lora_request)

    def add_lora(self, lora_request: LoRARequest, adapter: Any = None) -> None:
        """Register an adapter (``adapter``: one already read by ``self.lora.load``). Raises LoRAError."""
        if self.lora is None:
            raise ValueError("LoRA is not enabled; start with --enable-lora (offline: LLM(..., enable_lora=True)).")
        self.lora.add(lora_request, adapter)

    def remove_lora(self, name: str) -> bool:
        """Unregister an adapter by name; requests already running with it finish with it."""
        return self.lora is not None and self.lora.remove(name, self.requests)

    def list_loras(self) -> list[LoRARequest]:
        return self.lora.list() if self.lora is not None else []

    def _add_pooling(self, request_id: str, prompt: str | list[int] | None, params: PoolingParams,
                     token_ids: list[int] | None, **kwargs: Any) -> Request:
        """Queue a pooling request: prefill only; pooled and finished once its prompt is read."""
        setup = self.pooling
        if setup is None:
            raise ValueError("This engine generates text (runner generate); start it with --runner pooling "
                             "to embed, classify or score.")
        if request_id in self.requests:
            raise ValueError(f"Request id {request_id!r} is already in use.")
        params = setup.resolve(params)
        limit = setup.pooler.max_seq_length
        if token_ids is None and isinstance(prompt, str):
            token_ids = (self.tokenizer.encode(prompt, truncation=True, max_length=limit) if limit
                         else self.tokenizer.encode(prompt))
        keep = params.truncate_prompt_tokens
        if keep is not None and (token_ids is not None or prompt is not None):
            ids = list(token_ids if token_ids is not None else prompt)
            token_ids = ids[-(self.max_model_len if keep == -1 else keep):]
        ids = self._prompt_ids(prompt, token_ids, prefill_only=True)
        req = Request(request_id, prompt if isinstance(prompt, str) else None, ids, SamplingParams(max_tokens=0),
                      priority=kwargs["priority"], cache_salt=kwargs["cache_salt"],
                      cache_key_extra=kwargs["cache_key_extra"], arrival_time=kwargs["arrival_time"] or time.time())
        req.pooling = PoolingState(params, setup.pooler.pooling_type or "LAST", setup.pooler.step_tag_id)
        req.use_prefix_cache = setup.use_prefix_cache(params.task)
        req.whole_prompt = not setup.is_causal
        req.seqs.append(self._new_sequence(req, 0, None))
        self.scheduler.add(req.seqs[0])
        self.requests[request_id] = req
        self.num_prompt_tokens += len(ids)
        return req

    def _prompt_ids(self, prompt: str | list[int] | None, token_ids: list[int] | None, *,
                    prefill_only: bool) -> list[int]:
        if token_ids is None:
            if isinstance(prompt, str):
                token_ids = self.tokenizer.encode(prompt)
            elif prompt is not None:
                token_ids = list(prompt)
        ids = [int(t) for t in (token_ids or [])]
        if not ids:
            raise ValueError("The prompt is empty; give at least one token.")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise TokenIdError("prompt_token_ids", bad, self.vocab_size)
        if len(ids) > self.max_model_len or (len(ids) == self.max_model_len and not prefill_only):
            raise ValueError(f"The prompt ({len(ids)} tokens) leaves no room to generate within "
                             f"max_model_len ({self.max_model_len}).")
        return ids

    def _new_sequence(self, req: Request, index: int, compiled: Any) -> Sequence:
        params, ids = req.params, req.prompt_token_ids
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed((params.seed + 0x9E3779B97F4A7C15 * index) & 0x7FFF_FFFF_FFFF_FFFF)
        seq = Sequence(next(self._seq_ids), req, index, list(ids), len(ids), gen)
        if params.logprobs is not None:
            seq.logprobs = []
        if compiled is not None:
            if params.reasoning_gate is not None:  # one parser per sequence: siblings share no state
                seq.pending_grammar, seq.gate = compiled, params.reasoning_gate()
            else:
                seq.matcher = self.grammar.new_matcher(compiled)
        return seq

    def _bad_words(self, words: list[str]) -> list[list[int]]:
        found: list[list[int]] = []
        for word in words:
            for variant in (word, " " + word.lstrip()):
                ids = self.tokenizer.encode(variant, add_special_tokens=False)
                if ids and ids not in found:
                    found.append(ids)
        return found

    def abort(self, request_id: str, indices: list[int] | None = None) -> RequestOutput | PoolingRequestOutput | None:
        """Stop a request now and free its blocks; unknown or finished ids are ignored.

        ``indices``: stop only those samples, quietly (a front-end found their stop strings and
        has sent their last delta); the request ends once none is left.
        """
        req = self.requests.get(request_id)
        if req is None:
            return None
        if indices is not None:
            for seq in req.seqs:
                if seq.index in indices and not seq.finished and seq not in req.siblings_pending:
                    self.scheduler.remove(seq)
                    seq.status, seq.finish_reason, seq.finish_sent = SequenceStatus.FINISHED, "stop", True
            if not req.finished:
                return None
        del self.requests[request_id]
        req.aborted = True
        self._finish_all(req, "abort")
        return self._final_output(req)

    def _finish_all(self, req: Request, reason: str) -> None:
        """End every unfinished sequence of ``req`` (scheduled, waiting or not yet forked)."""
        req.siblings_pending = []
        for seq in req.seqs:
            if not seq.finished:
                self.scheduler.remove(seq)  # frees its blocks wherever it is (or is not)
                seq.status = SequenceStatus.FINISHED
                seq.finish_reason = reason
        req.metrics.finished_time = time.time()

    def _final_output(self, req: Request, out: RequestOutput | None = None) -> RequestOutput:
        try:
            out = out or req.output()
        except Exception as err:  # noqa: BLE001 - still end the request with a well-formed output
            log.exception("request %s: building its last output failed", req.request_id)
            req.error = req.error or f"building the output failed: {type(err).__name__}: {err}"
            out = RequestOutput(req.request_id, req.prompt, req.prompt_token_ids, finished=True, error=req.error,
                                outputs=[CompletionOutput(s.index, "", [], finish_reason=s.finish_reason or "error")
                                         for s in req.seqs if not s.finish_sent], metrics=req.metrics)
        try:
            call_hook("heron_request_finished", request_id=req.request_id, output=out, metrics=req.metrics)
        except Exception:  # noqa: BLE001 - an observer's failure never changes the request's outcome
            log.exception("the heron_request_finished hook failed for request %s", req.request_id)
        return out

    def _fail(self, req: Request, err: BaseException, where: str) -> None:
        """Handling ``req`` raised: end it alone (finish_reason "error", blocks freed)."""
        log.error("request %s failed in %s: %s: %s", req.request_id, where, type(err).__name__, err,
                  exc_info=(type(err), err, err.__traceback__))
        req.error = f"{where} failed: {type(err).__name__}: {err}"
        self.requests.pop(req.request_id, None)
        self._finish_all(req, "error")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- the step ---------------------------------------------------------------------------

    def step(self) -> list[RequestOutput | PoolingRequestOutput]:
        """Run one iteration; return the delta outputs of the requests that changed.

        Fault isolation: an exception while handling one request's row (its prompt logprobs,
        sampling with its logit bias, allowed ids or grammar bitmask, detokenizing, stop checks,
        the grammar matcher, the reasoning gate, building its output, the finished hook) ends that
        request alone: it finishes with ``finish_reason="error"`` and ``RequestOutput.error`` set,
        its blocks are freed, and every other request gets the output it would have had. A
        failure of the step as a whole (scheduling, the model's forward) is an engine fault: it
        propagates, and the :class:`~heron.engine.AsyncEngine` loop stops.
        """
        if self.sleep_state.asleep:  # no KV pool (or weights) to run on: requests wait for wake_up()
            return []
        drafts = self.spec.propose(self.scheduler.running, self.max_model_len) if self.spec is not None else None
        sched = self.scheduler.schedule(drafts)
        if not sched.scheduled:
            return []
        if drafts:
            self.spec.fill(sched, self.scheduler.running)  # a draft model drafts into the slots just allocated
        full_for = {
            item.seq.seq_id for item in sched.scheduled
            if item.seq.index == 0 and item.seq.request.prompt_logprobs is not None
            and item.seq.num_computed_tokens < item.seq.num_prompt_tokens
        }
        pool_for = {item.seq.seq_id for item in sched.scheduled if item.seq.request.pooling is not None}
        spec_for = {item.seq.seq_id for item in sched.scheduled if item.num_draft_tokens}
        logits = self.model_runner.execute(sched, full_for | spec_for if spec_for else full_for, pool_for)
        touched: dict[str, Request] = {}
        for item in sched.scheduled:
            seq = item.seq
            if seq.seq_id in full_for and not seq.finished:
                try:
                    record_prompt_logprobs(seq, item.num_new_tokens, logits.full[seq.seq_id])
                except Exception as err:  # noqa: BLE001 - that request alone fails
                    self._fail(seq.request, err, "computing prompt logprobs")
                    touched[seq.request.request_id] = seq.request
            if seq.seq_id in pool_for and not seq.finished:
                seq.request.pooling.keep(logits.hidden[seq.seq_id], seq.num_computed_tokens, item.samples)
            if not seq.finished and not item.num_draft_tokens:  # drafts: after verification (self.spec)
                seq.num_computed_tokens += item.num_new_tokens
                self.blocks.commit(seq)
        for item in sched.scheduled:
            seq = item.seq
            if item.samples and seq.params.max_tokens == 0 and not seq.finished:  # prefill only: nothing to sample
                if seq.request.pooling is not None:
                    self._pool(seq.request)
                else:
                    self._finish_all(seq.request, "length")
                touched[seq.request.request_id] = seq.request
        rows = [(j, item.seq) for j, item in enumerate(x for x in sched.scheduled if x.needs_logits)]
        rows = [(j, seq) for j, seq in rows if not seq.finished]
        if rows:
            now = time.time()
            for seq, token, lp, sampled_lp in self._sample(logits.sample, rows, touched):
                req = seq.request
                if seq.finished:  # its request failed in this step
                    continue
                try:
                    if req.siblings_pending and seq.index == 0:
                        self._fork(seq)
                    self._append(seq, token, lp, sampled_lp)
                except Exception as err:  # noqa: BLE001 - that request alone fails
                    self._fail(req, err, "handling the sampled token")
                if req.metrics.first_token_time is None:
                    req.metrics.first_token_time = now
                touched[req.request_id] = req
        if spec_for:
            self.spec.finish(self, sched, logits, touched)
        outputs = [self._output(req) for req in touched.values()]
        if self.lora is not None:
            self.lora.sweep(self.requests)
        return outputs

    def _pool(self, req: Request) -> None:
        """``req``'s prompt is read: pool its kept rows, then end it (its blocks are freed)."""
        try:
            req.pooling.data = req.pooling.result(self.model, req.prompt_token_ids)
        except Exception as err:  # noqa: BLE001 - that request alone fails
            self._fail(req, err, "pooling")
            return
        self._finish_all(req, "stop")

    def _output(self, req: Request) -> RequestOutput | PoolingRequestOutput:
        out = None
        if not req.finished:
            try:
                out = req.output()
            except Exception as err:  # noqa: BLE001 - that request alone fails
                self._fail(req, err, "building the output")
                out = None
            for seq in req.stopped:  # a stop string ended them: free their blocks now
                self.scheduler.remove(seq)
            req.stopped.clear()
            if out is not None and not req.finished:
                return out
        self.requests.pop(req.request_id, None)
        req.metrics.finished_time = req.metrics.finished_time or time.time()
        return self._final_output(req, out)

    def _sample(self, logits: torch.Tensor, rows: list[tuple[int, Sequence]],
                touched: dict[str, Request]) -> list[tuple[Sequence, int, dict[int, Logprob] | None, float | None]]:
        """Sample every row at once; if that raises, redo the rows one by one so that only the
        requests whose own row fails are ended (the sampler does not modify ``logits``)."""
        idx = [j for j, _ in rows]
        seqs = [seq for _, seq in rows]
        sub = logits if len(idx) == logits.shape[0] else logits[idx]
        try:
            out = self.sampler(sub, seqs)
            return list(zip(seqs, out.token_ids, out.logprobs, out.sampled_logprobs, strict=True))
        except Exception:  # noqa: BLE001 - find the culprit rows below
            log.warning("batched sampling failed; sampling the %d rows one by one", len(seqs), exc_info=True)
        results = []
        for r, seq in enumerate(seqs):
            if seq.finished:
                continue
            try:
                one = self.sampler(sub[r : r + 1], [seq])
            except Exception as err:  # noqa: BLE001 - that request alone fails
                self._fail(seq.request, err, "sampling")
                touched[seq.request.request_id] = seq.request
                continue
            results.append((seq, one.token_ids[0], one.logprobs[0], one.sampled_logprobs[0]))
        return results

    def _fork(self, first: Sequence) -> None:
        """Sample 0 has computed the prompt: its siblings join, sharing its full prompt blocks."""
        req = first.request
        for sib in req.siblings_pending:
            sib.num_cached_tokens = self.blocks.fork(first, sib)
            self.scheduler.add(sib)
        req.siblings_pending = []

    def _new_matcher(self, compiled: Any) -> Any:
        """A grammar matcher; the grammar backend (xgrammar: ~25 MB) is built only when a request needs one."""
        return self.grammar.new_matcher(compiled)

    def _append(self, seq: Sequence, token: int, lp: dict[int, Logprob] | None, sampled_lp: float | None) -> None:
        self.num_generated_tokens += 1
        if append_token(seq, token, lp, sampled_lp, eos_token_ids=self.eos_token_ids,
                        max_model_len=self.max_model_len, new_matcher=self._new_matcher):
            self.scheduler.remove(seq)
            seq.status = SequenceStatus.FINISHED

    # -- sleep mode and the prefix cache (heron.engine.sleep) -------------------------------

    def sleep(self, level: int = 1) -> SleepState:
        """Free the KV pool (level 1) and the weights (level 2); running sequences are paused."""
        return sleep_engine(self, level)

    def wake_up(self, tags: list[str] | None = None) -> SleepState:
        """Reload what :meth:`sleep` released (``tags``: only ``weights`` or ``kv_cache``)."""
        return wake_engine(self, tags)

    @property
    def is_sleeping(self) -> bool:
        return self.sleep_state.asleep

    def reset_prefix_cache(self) -> int:
        """Forget every cached prefix block no sequence holds; returns how many were dropped."""
        # tensor parallelism: block tables and prefix hashes live on rank 0 only (workers hold KV
        # at the slots rank 0 sends), so rank 0 alone resets them
        return self.blocks.evict_cached_free()

    def shutdown(self) -> None:
        """Stop the tensor-parallel workers, if any (idempotent; also runs at interpreter exit)."""
        if getattr(self, "parallel", None) is not None:
            self.parallel.shutdown()

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
            "sleep_level": self.sleep_state.level if self.sleep_state.asleep else 0,
            **({"lora": self.lora.stats(self.scheduler.running, list(self.scheduler.waiting))} if self.lora else {}),
            **(self.spec.stats.as_dict() if self.spec is not None else {}),
        }
