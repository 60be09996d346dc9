"""The grammar backend: compiles constraints with xgrammar and masks logits, batched.

Built once per engine from the HF tokenizer and the width of the model's logits. Compiling is
the slow part (milliseconds for small schemas, seconds for large ones with many patterns): it
runs in C++ without the GIL, in the backend's thread pool (several compiles run side by side,
so a slow one never holds up the others), and is cached by content. Its cost is bounded up
front by :class:`~heron.structured.limits.StructuredLimits` (a Python thread cannot be
interrupted), and :meth:`GrammarBackend.compile` waits at most ``compile_timeout_s``. Masking is per step:
:meth:`GrammarBackend.fill` writes one bitmask row per constrained sequence (xgrammar's
``BatchGrammarMatcher``, multi-threaded) and :meth:`GrammarBackend.apply_bitmask` sets the
disallowed logits of those rows to ``-inf`` in one call, leaving unconstrained rows untouched.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import xgrammar as xgr

from heron.structured.limits import StructuredLimits
from heron.structured.matcher import RequestMatcher
from heron.structured.params import StructuredOutputError, StructuredOutputsParams

__all__ = ("CompiledGrammar", "GrammarBackend", "RequestMatcher")

#: what :meth:`GrammarBackend.compile` returns (an immutable, thread-safe xgrammar object)
CompiledGrammar = xgr.CompiledGrammar

# xgrammar errors read "[12:00:00] /project/cpp/file.cc:123: Check failed: (...) is false: why"
_LOG_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*(Check failed: .*? is false:\s*)?")
_WHAT = {
    "json": "JSON schema",
    "json_object": "JSON object constraint",
    "regex": "regex",
    "choice": "choice list",
    "grammar": "EBNF grammar",
    "structural_tag": "structural tag",
}


def _clean(error: Exception) -> str:
    text = _LOG_PREFIX.sub("", str(error)).strip().rstrip(".")
    return text if len(text) <= 400 else text[:400] + "…"


def _bits(ids: Sequence[int], width: int, *, set_: bool) -> torch.Tensor:
    """An int32 bitmask row of ``width`` words: ``ids`` set (others clear), or clear (others set)."""
    words = np.full(width, 0 if set_ else 0xFFFFFFFF, dtype=np.uint32)
    for t in ids:
        bit = np.uint32(1 << (t % 32))
        words[t // 32] = (words[t // 32] | bit) if set_ else (words[t // 32] & ~bit)
    return torch.from_numpy(words.view(np.int32).copy())


class GrammarBackend:
    """Compiles structured-output constraints and applies them to logits (xgrammar).

    Args:
        tokenizer: the model's HF tokenizer (``PreTrainedTokenizerFast``).
        vocab_size: the width of the model's logits (``hf_config.vocab_size``); may be larger
            than the tokenizer's vocabulary (padded lm_head): the extra ids are never allowed.
        stop_token_ids: the ids that end generation (the engine's EOS ids); default: the
            tokenizer's ``eos_token_id``. A complete output allows exactly these next.
        cache_size: how many compiled grammars to keep (least recently used go first).
        compile_threads: how many compiles may run at once (the thread pool's size).
        limits: bounds checked before compiling, and the compile timeout (None: defaults).

    Thread-safety: ``compile``/``compile_async``/``new_matcher`` may be called from any thread;
    ``fill``/``apply``/``apply_bitmask`` share one bitmask buffer and belong to the engine thread.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int | None = None,
        *,
        stop_token_ids: Sequence[int] | None = None,
        cache_size: int = 256,
        compile_threads: int = 8,
        limits: StructuredLimits | None = None,
    ) -> None:
        stops = list(stop_token_ids) if stop_token_ids else None
        self.tokenizer_info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stops
        )
        #: the logits width the bitmask covers
        self.vocab_size: int = self.tokenizer_info.vocab_size
        self.stop_token_ids: list[int] = list(self.tokenizer_info.stop_token_ids)
        cpus = os.cpu_count() or 1
        #: the bounds every constraint is checked against before compiling
        self.limits = limits or StructuredLimits()
        # heron caches compiled grammars itself (bounded LRU); xgrammar's own cache is unbounded
        self._compiler = xgr.GrammarCompiler(
            self.tokenizer_info, max_threads=min(8, cpus), cache_enabled=False
        )
        self._batch = xgr.BatchGrammarMatcher(max_threads=max(1, min(8, cpus // 2)))
        width = (self.vocab_size + 31) // 32
        self._stop_row = _bits(self.stop_token_ids, width, set_=True)
        # xgrammar treats control tokens such as <|im_start|> as plain text (their literal
        # spelling), so it would let one appear inside a JSON string; the detokenizer then drops
        # it. Constrained rows never allow special tokens other than the stop tokens.
        self._keep_row = _bits(self._special_ids(tokenizer), width, set_=False)
        self._bitmask: torch.Tensor | None = None
        self._cache: OrderedDict[tuple, Future[CompiledGrammar]] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._lock = threading.Lock()
        self._compile_threads = max(1, compile_threads)
        self._pool: ThreadPoolExecutor | None = None

    def _special_ids(self, tokenizer: Any) -> list[int]:
        ids = set(getattr(tokenizer, "all_special_ids", None) or [])
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        ids |= {i for i, tok in added.items() if getattr(tok, "special", False)}
        return sorted(i for i in ids - set(self.stop_token_ids) if 0 <= i < self.vocab_size)

    # -- compiling ----------------------------------------------------------------------------

    def compile(self, params: StructuredOutputsParams) -> CompiledGrammar:
        """The compiled grammar of ``params``, from the cache when the same content was seen.

        Compiles in the backend's thread pool and waits at most ``limits.compile_timeout_s``
        (the compile itself goes on and is cached; its cost is bounded by ``limits``).

        Raises:
            StructuredOutputError: the schema, regex, choice list or grammar is invalid, exceeds
                a bound of ``limits``, or did not compile within the timeout (``param`` is
                "structured_outputs"; the server relabels it with ``for_param``).
        """
        future = self.compile_async(params)
        try:
            return future.result(timeout=self.limits.compile_timeout_s)
        except TimeoutError:
            raise self._timed_out(params) from None

    async def acompile(self, params: StructuredOutputsParams) -> CompiledGrammar:
        """:meth:`compile` for asyncio: awaits the pool's result without holding a thread
        (the event loop and the default executor stay free) and with the same timeout."""
        future = asyncio.wrap_future(self.compile_async(params))
        try:
            # shield: a timed-out waiter must not cancel a compile other requests share
            return await asyncio.wait_for(asyncio.shield(future), self.limits.compile_timeout_s)
        except TimeoutError:
            raise self._timed_out(params) from None

    def _timed_out(self, params: StructuredOutputsParams) -> StructuredOutputError:
        return StructuredOutputError(
            f"Compiling the {_WHAT[params.kind]} took longer than the compile timeout "
            f"({self.limits.compile_timeout_s:g} s, compile_timeout_s); simplify it."
        )

    def compile_async(self, params: StructuredOutputsParams) -> Future[CompiledGrammar]:
        """Like :meth:`compile`, without waiting: the future holds the grammar or the
        StructuredOutputError (a bound of ``limits`` exceeded: already set). Callers asking for
        the same content share one future (do not cancel it). From asyncio:
        ``await asyncio.wait_for(asyncio.wrap_future(backend.compile_async(p)), timeout)``."""
        try:
            self.limits.check(params)
        except StructuredOutputError as e:
            refused: Future[CompiledGrammar] = Future()
            refused.set_exception(e)
            return refused
        future, mine = self._claim(params)
        if mine:
            self._executor().submit(self._run, future, params)
        return future

    def _claim(self, params: StructuredOutputsParams) -> tuple[Future[CompiledGrammar], bool]:
        """The cached future for this content, or a new pending one that the caller must run."""
        key = params.key()
        with self._lock:
            future = self._cache.get(key)
            if future is not None:
                self._cache.move_to_end(key)
                return future, False
            future = self._cache[key] = Future()
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return future, True

    def _run(self, future: Future[CompiledGrammar], params: StructuredOutputsParams) -> None:
        if not future.set_running_or_notify_cancel():
            self._forget(params.key(), future)
            return
        try:
            compiled = self._COMPILERS[params.kind](self, params)
        except StructuredOutputError as e:
            self._forget(params.key(), future)
            future.set_exception(e)
        except (RuntimeError, ValueError, TypeError, KeyError) as e:  # xgrammar reports bad input as RuntimeError
            self._forget(params.key(), future)
            what = _WHAT[params.kind]
            future.set_exception(StructuredOutputError(f"Invalid {what}: {_clean(e)}."))
        except BaseException as e:  # never leave a shared future pending
            self._forget(params.key(), future)
            future.set_exception(e)
        else:
            future.set_result(compiled)

    def _forget(self, key: tuple, future: Future[CompiledGrammar]) -> None:
        """Failures are not cached: the next request with this content gets a fresh try."""
        with self._lock:
            if self._cache.get(key) is future:
                del self._cache[key]

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._compile_threads, "heron-grammar")
            return self._pool

    def shutdown(self) -> None:
        """Stop the compile thread pool (pending compilations finish first)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _json(self, params: StructuredOutputsParams) -> CompiledGrammar:
        return self._compiler.compile_json_schema(
            params.schema_text() or "{}", any_whitespace=not params.disable_any_whitespace
        )

    def _json_object(self, params: StructuredOutputsParams) -> CompiledGrammar:
        # any object, nested values of any type (strict mode would forbid extra properties)
        return self._compiler.compile_json_schema(
            '{"type": "object"}',
            any_whitespace=not params.disable_any_whitespace,
            strict_mode=False,
        )

    def _regex(self, params: StructuredOutputsParams) -> CompiledGrammar:
        return self._compiler.compile_regex(params.regex or "")

    def _choice(self, params: StructuredOutputsParams) -> CompiledGrammar:
        # JSON string escapes (\" \\ \n \uXXXX) are also EBNF string-literal escapes
        options = " | ".join(json.dumps(c, ensure_ascii=False) for c in params.choice or [])
        return self._compiler.compile_grammar(f"root ::= {options}")

    def _grammar(self, params: StructuredOutputsParams) -> CompiledGrammar:
        return self._compiler.compile_grammar(params.grammar or "")

    def _structural_tag(self, params: StructuredOutputsParams) -> CompiledGrammar:
        tag = json.loads(params.structural_tag or "{}")
        if not isinstance(tag, dict):
            raise StructuredOutputError("A structural tag must be a JSON object.")
        if "structures" in tag:  # the older form: begin/schema/end items and trigger prefixes
            items = [xgr.StructuralTagItem(begin=s["begin"], schema=json.dumps(s.get("schema") or {}), end=s["end"])
                     for s in tag["structures"]]
            return self._compiler.compile_structural_tag(items, tag.get("triggers") or [])
        return self._compiler.compile_structural_tag(json.dumps(tag))

    _COMPILERS: dict[str, Callable[[GrammarBackend, StructuredOutputsParams], CompiledGrammar]] = {
        "json": _json,
        "json_object": _json_object,
        "regex": _regex,
        "choice": _choice,
        "grammar": _grammar,
        "structural_tag": _structural_tag,
    }

    # -- matching -----------------------------------------------------------------------------

    def new_matcher(self, compiled: CompiledGrammar) -> RequestMatcher:
        """A fresh matcher (one per sequence) at the start of ``compiled``."""
        return RequestMatcher(xgr.GrammarMatcher(compiled), self._stop_row)

    def allocate_bitmask(self, max_batch: int) -> torch.Tensor:
        """(Re)allocate the shared bitmask: int32 ``[max_batch, ceil(vocab_size / 32)]`` on CPU."""
        self._bitmask = xgr.allocate_token_bitmask(max(1, max_batch), self.vocab_size)
        return self._bitmask

    def fill(self, rows: Sequence[int], matchers: Sequence[RequestMatcher]) -> torch.Tensor:
        """Write ``matchers[i]``'s allowed next tokens into bitmask row ``rows[i]``; returns the
        shared bitmask (rows not listed hold stale data: pass the same ``rows`` to apply)."""
        if len(rows) != len(matchers):
            raise ValueError(f"{len(rows)} rows but {len(matchers)} matchers.")
        need = max(rows, default=-1) + 1
        if self._bitmask is None or self._bitmask.shape[0] < need:
            self.allocate_bitmask(
                max(need, 2 * (0 if self._bitmask is None else len(self._bitmask)))
            )
        bitmask = self._bitmask
        live = [(r, m) for r, m in zip(rows, matchers, strict=True) if not m.is_terminated()]
        for r, m in zip(rows, matchers, strict=True):
            if m.is_terminated():
                m.fill_bitmask(bitmask, r)  # only the stop tokens
        if live:
            live_rows = [r for r, _ in live]
            self._batch.batch_fill_next_token_bitmask(
                [m._matcher for _, m in live], bitmask, indices=live_rows
            )
            idx = torch.tensor(live_rows)  # (index_copy_: int32 advanced-index setitem is slow)
            bitmask.index_copy_(0, idx, bitmask.index_select(0, idx) & self._keep_row)
        return bitmask

    def apply_bitmask(
        self, logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int]
    ) -> None:
        """Set the disallowed logits of ``rows`` to ``-inf`` in place (one batched call).

        ``logits``: float ``[n, width]`` on any device; columns past ``vocab_size`` (a wider
        lm_head) are disallowed in those rows. Other rows are left untouched.
        """
        if not rows:
            return
        rows = list(rows)
        if bitmask.device != logits.device:
            bitmask = bitmask[: max(rows) + 1].to(logits.device, non_blocking=True)
        width = logits.shape[-1]
        xgr.apply_token_bitmask_inplace(
            logits, bitmask, vocab_size=min(width, self.vocab_size), indices=rows
        )
        if width > self.vocab_size:
            idx = torch.tensor(rows, device=logits.device)
            logits[:, self.vocab_size :].index_fill_(0, idx, float("-inf"))

    def apply(
        self, logits: torch.Tensor, rows: Sequence[int], matchers: Sequence[RequestMatcher]
    ) -> None:
        """Mask ``logits`` (float ``[n, width]``) rows ``rows`` by their ``matchers``, in place."""
        if rows:
            self.apply_bitmask(logits, self.fill(rows, matchers), rows)
