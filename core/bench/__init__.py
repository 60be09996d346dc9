"""Benchmarks behind ``heron bench``: offline throughput and latency, a serving load generator, and
embedding throughput (offline or against a server).

``heron bench serve`` drives any OpenAI-compatible server, so the same numbers can be taken
from heron, vLLM, llama.cpp's llama-server or llama-cpp-python (see ``benchmarks/compare.py``).
"""

from heron.bench.embed import EmbedResult, run_embed_offline, run_embed_serve, sentence_texts
from heron.bench.offline import LatencyResult, ThroughputResult, run_latency, run_throughput
from heron.bench.serve import RequestResult, ServeConfig, ServeResult, run_serve, sse_events
from heron.bench.stats import percentile, summarize
from heron.bench.workload import (
    Prompt,
    load_prompt_file,
    load_tokenizer,
    random_prompts,
    word_token_ids,
)

__all__ = (
    "EmbedResult",
    "LatencyResult",
    "Prompt",
    "RequestResult",
    "ServeConfig",
    "ServeResult",
    "ThroughputResult",
    "load_prompt_file",
    "load_tokenizer",
    "percentile",
    "random_prompts",
    "run_embed_offline",
    "run_embed_serve",
    "run_latency",
    "run_serve",
    "run_throughput",
    "sentence_texts",
    "sse_events",
    "summarize",
    "word_token_ids",
)
