"""Tiny random-weight checkpoints and a minimal paged runner for model and kernel tests.

The runner does its own simple block allocation (from a shuffled free list, so block tables
are not contiguous) and builds the :class:`ForwardBatch` the engine would build.
"""

from __future__ import annotations

import copy
import inspect
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from heron.interfaces import AttentionBackend, ForwardBatch, ModelContext
from heron.layers import allocate_kv_caches
from heron.loader import build_model, load_checkpoint
from heron.plugins import registry

__all__ = ("PagedRunner", "hf_reference_logits", "make_batch", "tiny_checkpoint", "tiny_config")

VOCAB = 256


def tiny_config(kind: str = "llama", **overrides: Any) -> Any:
    """A small HF config of ``kind`` (llama, qwen2, mistral): 2 layers, 4 heads, 2 kv heads."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[kind]
    base = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.1,  # peaky attention, so masking and rope errors show in the logits
    )
    if kind == "mistral":
        base["sliding_window"] = None
    base.update(overrides)
    config = cls(**base)
    config.architectures = [f"{cls.__name__.removesuffix('Config')}ForCausalLM"]
    return config


def tiny_checkpoint(config: Any, path: Path, seed: int = 0) -> Any:
    """Save a random-weight transformers model for ``config`` under ``path``; return it (fp32, eager)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():  # spread the biases so that they matter
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(path)
    return model.eval()


def make_batch(
    query_lens: list[int], seq_lens: list[int], block_tables: list[list[int]], block_size: int
) -> ForwardBatch:
    """The ForwardBatch for requests with these new-token counts, lengths and block tables."""
    width = max(len(b) for b in block_tables)
    slots = []
    for q, s, blocks in zip(query_lens, seq_lens, block_tables, strict=True):
        slots += [blocks[p // block_size] * block_size + p % block_size for p in range(s - q, s)]
    starts = torch.tensor([0, *query_lens], dtype=torch.int32).cumsum(0).to(torch.int32)
    return ForwardBatch(
        num_reqs=len(query_lens),
        num_tokens=sum(query_lens),
        block_size=block_size,
        query_lens=list(query_lens),
        seq_lens=list(seq_lens),
        query_start_loc=starts,
        seq_lens_tensor=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([b + [0] * (width - len(b)) for b in block_tables], dtype=torch.int32),
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        logits_indices=(starts[1:] - 1).to(torch.int64),
    )


@dataclass
class PagedRunner:
    """Runs a heron model step by step over a paged cache, like the engine would."""

    model: Any
    backend: AttentionBackend
    block_size: int = 4
    num_blocks: int = 64
    seed: int = 0
    lens: dict[str, int] = field(default_factory=dict)
    tables: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = list(range(self.num_blocks))
        random.Random(self.seed).shuffle(self.free)

    @classmethod
    def load(cls, path: Path | str, backend: str, dtype: torch.dtype = torch.float32, **kw: Any) -> PagedRunner:
        backend_cls = registry("attention_backends").load(backend)
        instance = backend_cls()
        ctx = ModelContext(dtype=dtype, device=torch.device("cpu"), attention_backend=instance)
        model = build_model(load_checkpoint(str(path)), ctx)
        runner = cls(model, instance, **kw)
        allocate_kv_caches(model, backend_cls, runner.num_blocks, runner.block_size, dtype, "cpu")
        return runner

    def step(self, new_tokens: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        """Run one step; returns each request's logits for all its new tokens ([n, vocab] fp32)."""
        q_lens, s_lens, tables, ids, positions = [], [], [], [], []
        for rid, toks in new_tokens.items():
            start = self.lens.get(rid, 0)
            table = self.tables.setdefault(rid, [])
            while len(table) * self.block_size < start + len(toks):
                table.append(self.free.pop())
            self.lens[rid] = start + len(toks)
            q_lens.append(len(toks))
            s_lens.append(start + len(toks))
            tables.append(table)
            ids += toks
            positions += range(start, start + len(toks))
        batch = make_batch(q_lens, s_lens, tables, self.block_size)
        batch.attn_metadata = self.backend.build_batch(batch)
        with torch.inference_mode():
            hidden = self.model(torch.tensor(ids), torch.tensor(positions), batch)
            logits = self.model.compute_logits(hidden)
        return dict(zip(new_tokens, logits.split(q_lens), strict=True))


def hf_reference_logits(hf_model: Any, chunks: list[list[int]]) -> torch.Tensor:
    """transformers' logits for one request fed chunk by chunk through its KV cache: [n, vocab].

    A fresh copy of the model per request keeps stateful rope (dynamic) from leaking across.
    """
    model = copy.deepcopy(hf_model)
    # transformers 5.x renamed ``past_key_values`` to ``cache``; accept both
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache, out = None, []
    with torch.inference_mode():
        for chunk in chunks:
            res = model(input_ids=torch.tensor([chunk]), use_cache=True, **{key: cache})
            cache = getattr(res, key)
            out.append(res.logits[0].float())
    return torch.cat(out)
