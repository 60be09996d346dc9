"""Drive any OpenAI-compatible server with streaming requests and measure what a client sees.

Requests go to ``/completions`` (or ``/chat/completions``) with ``stream: true``, ``max_tokens``
and ``ignore_eos: true`` (honoured by heron, vLLM and llama-server; others ignore it, so their
output may be shorter: the token counts reported are the ones received). Concurrency is capped by
a semaphore; with a request rate, arrivals are a seeded Poisson process. Server-sent events are
parsed here: each ``data:`` event with text is one chunk; the token count is the ``usage`` the
server reports when asked (``stream_options.include_usage``), else the number of text chunks.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from heron.bench.stats import summarize
from heron.bench.workload import Prompt

__all__ = ("RequestResult", "ServeConfig", "ServeResult", "run_serve", "sse_events")


@dataclass(slots=True)
class ServeConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None  # None: the first id that GET /models lists
    endpoint: str = "completions"  # or "chat"
    output_len: int = 128
    concurrency: int | None = None  # None: no cap
    request_rate: float = math.inf  # requests per second; inf: all at once
    api_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    include_usage: bool = True
    timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be 'completions' or 'chat', not {self.endpoint!r}.")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1.")
        if self.request_rate <= 0:
            raise ValueError("request_rate must be positive (inf sends every request at once).")


@dataclass(slots=True)
class RequestResult:
    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float = math.nan
    latency_s: float = math.nan
    itl_s: list[float] = field(default_factory=list)  # gaps between text chunks
    error: str | None = None


@dataclass(slots=True)
class ServeResult:
    model: str
    num_requests: int
    completed: int
    errors: int
    short: int  # completed with fewer tokens than asked (the server ignored ignore_eos or cut the stream)
    duration_s: float
    input_tokens: int
    output_tokens: int
    requests_per_s: float
    output_tok_s: float
    total_tok_s: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    tpot_ms: dict[str, float]  # per request: (latency - ttft) / (output tokens - 1)
    e2e_ms: dict[str, float]
    concurrency: int | None
    request_rate: float
    error_samples: list[str] = field(default_factory=list)


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # comments (":") and other fields (event:, id:, retry:) carry nothing we time
    if data:
        yield "\n".join(data)


def _chunk_text(obj: dict[str, Any]) -> str:
    text = ""
    for choice in obj.get("choices") or []:
        if "text" in choice:
            text += choice.get("text") or ""
        delta = choice.get("delta") or {}
        for key in ("content", "reasoning_content", "reasoning"):
            text += delta.get(key) or ""
    return text


def _payload(cfg: ServeConfig, model: str, prompt: Prompt, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": True, "temperature": 0.0,
                            "ignore_eos": True}
    if cfg.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    if cfg.include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(cfg.extra_body)
    return body


async def _one(client: Any, cfg: ServeConfig, model: str, prompt: Prompt, max_tokens: int) -> RequestResult:
    path = "/chat/completions" if cfg.endpoint == "chat" else "/completions"
    res = RequestResult(ok=False, prompt_tokens=prompt.num_tokens)
    chunks, usage = 0, None
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", cfg.base_url.rstrip("/") + path,
                                 json=_payload(cfg, model, prompt, max_tokens)) as resp:
            if resp.status_code != 200:
                body = (await resp.aread()).decode(errors="replace")
                res.error = f"HTTP {resp.status_code}: {body[:200]}"
                return res
            async for data in sse_events(resp.aiter_lines()):
                if data.strip() == "[DONE]":
                    break
                obj = json.loads(data)
                if obj.get("error"):
                    res.error = f"stream error: {json.dumps(obj['error'])[:200]}"
                    return res
                usage = obj.get("usage") or usage
                if _chunk_text(obj):
                    now = time.perf_counter()
                    if chunks == 0:
                        res.ttft_s = now - start
                    else:
                        res.itl_s.append(now - last)
                    last, chunks = now, chunks + 1
    except Exception as err:  # a benchmark counts failures; it does not stop on them
        res.error = f"{type(err).__name__}: {err}"[:200]
        return res
    res.latency_s = time.perf_counter() - start
    if usage and usage.get("completion_tokens") is not None:
        res.output_tokens = int(usage["completion_tokens"])
        res.prompt_tokens = int(usage.get("prompt_tokens") or prompt.num_tokens)
    else:
        res.output_tokens = chunks
    res.ok = chunks > 0
    if not res.ok:
        res.error = "the stream ended without any text"
    return res


async def _resolve_model(client: Any, cfg: ServeConfig) -> str:
    if cfg.model:
        return cfg.model
    resp = await client.get(cfg.base_url.rstrip("/") + "/models")
    resp.raise_for_status()
    models = resp.json().get("data") or []
    if not models:
        raise ValueError(f"{cfg.base_url}/models lists no model; pass --model NAME.")
    return str(models[0]["id"])


async def run_serve(prompts: list[Prompt], cfg: ServeConfig, *, warmup: list[Prompt] | None = None,
                    use_tqdm: bool = True) -> ServeResult:
    """Send every prompt (after the untimed ``warmup`` ones, sequentially) and summarize."""
    import httpx
    from tqdm.auto import tqdm

    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    limits = httpx.Limits(max_connections=max(cfg.concurrency or len(prompts), 1) + 2)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=cfg.timeout_s) as client:
        model = await _resolve_model(client, cfg)
        for p in warmup or []:
            await _one(client, cfg, model, p, min(cfg.output_len, 8))
        sem = asyncio.Semaphore(cfg.concurrency or len(prompts) or 1)
        bar = tqdm(total=len(prompts), desc="Requests", unit="req", disable=not use_tqdm)

        async def limited(p: Prompt) -> RequestResult:
            async with sem:
                r = await _one(client, cfg, model, p, cfg.output_len)
            bar.update(1)
            return r

        rng = random.Random(cfg.seed)
        start = time.perf_counter()
        tasks = []
        for i, p in enumerate(prompts):
            if i and math.isfinite(cfg.request_rate):
                await asyncio.sleep(rng.expovariate(cfg.request_rate))
            tasks.append(asyncio.create_task(limited(p)))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
        bar.close()
    return _summarize(model, results, duration, cfg)


def _summarize(model: str, results: list[RequestResult], duration: float, cfg: ServeConfig) -> ServeResult:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    tpot = [(r.latency_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    duration = max(duration, 1e-9)
    return ServeResult(
        model=model, num_requests=len(results), completed=len(ok), errors=len(results) - len(ok),
        short=sum(r.output_tokens < cfg.output_len for r in ok),
        duration_s=duration, input_tokens=in_tokens, output_tokens=out_tokens,
        requests_per_s=len(ok) / duration, output_tok_s=out_tokens / duration,
        total_tok_s=(in_tokens + out_tokens) / duration,
        ttft_ms=summarize([r.ttft_s for r in ok], 1000), itl_ms=summarize([g for r in ok for g in r.itl_s], 1000),
        tpot_ms=summarize(tpot, 1000), e2e_ms=summarize([r.latency_s for r in ok], 1000),
        concurrency=cfg.concurrency, request_rate=cfg.request_rate,
        error_samples=sorted({r.error for r in results if r.error})[:5],
    )
