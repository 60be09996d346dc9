"""Embedding throughput: texts per second through heron's offline ``LLM.embed`` or any server's
``/v1/embeddings`` (OpenAI-compatible) at a given concurrency.

The texts come from :func:`sentence_texts`: varied sentences of a chosen length in words, made
from a fixed seed, so two engines measured on the same arguments embed the same texts.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

__all__ = ("EmbedResult", "run_embed_offline", "run_embed_serve", "sentence_texts")

_WORDS = (
    "the a model server request token embedding vector search query document river mountain city "
    "market price learning network language engine batch fast slow blue green small large quiet bright "
    "reads writes finds returns holds sends builds measures compares ranks"
).split()


@dataclass(slots=True)
class EmbedResult:
    num_texts: int
    seconds: float
    texts_per_s: float
    concurrency: int | None = None  # server runs: requests in flight
    errors: int = 0


def sentence_texts(n: int, words: int, seed: int = 0) -> list[str]:
    """``n`` distinct pseudo-sentences of about ``words`` words each (lengths vary by +-50%)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = max(1, int(words * rng.uniform(0.5, 1.5)))
        out.append(f"{i}: " + " ".join(rng.choice(_WORDS) for _ in range(k)) + ".")
    return out


def run_embed_offline(llm: Any, texts: list[str], warmup: list[str] | None = None) -> EmbedResult:
    """Embed every text in one ``llm.embed`` call (the engine batches them) and time it."""
    if warmup:
        llm.embed(warmup, use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.embed(texts, use_tqdm=False)
    seconds = time.perf_counter() - start
    assert len(outputs) == len(texts)
    return EmbedResult(len(texts), seconds, len(texts) / seconds)


async def _serve(base_url: str, model: str, texts: list[str], concurrency: int, batch: int,
                 api_key: str | None) -> tuple[float, int]:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            chunk = queue.get_nowait()
            resp = await client.post(f"{base_url}/embeddings", json={"model": model, "input": chunk,
                                                                     "encoding_format": "float"})
            if resp.status_code != 200 or len(resp.json().get("data", [])) != len(chunk):
                errors += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, headers=headers, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - start, errors


def run_embed_serve(base_url: str, model: str, texts: list[str], *, concurrency: int = 16, batch: int = 1,
                    api_key: str | None = None, warmup: list[str] | None = None) -> EmbedResult:
    """POST ``texts`` to ``{base_url}/embeddings`` (``batch`` texts a request), ``concurrency`` at a time."""
    if warmup:
        asyncio.run(_serve(base_url, model, warmup, 1, len(warmup), api_key))
    seconds, errors = asyncio.run(_serve(base_url, model, texts, concurrency, batch, api_key))
    return EmbedResult(len(texts), seconds, len(texts) / seconds, concurrency, errors)
