"""Test a model plugin against transformers: tiny random checkpoints, a paged runner, references.

A model plugin author writes a tiny random-weight checkpoint with transformers' own config class
(:func:`tiny_config`, :func:`tiny_checkpoint`), runs it through heron's paged attention step by
step the way the engine does (:class:`PagedRunner`: prefills, chunked prefills and decodes of
several requests mixed in one batch, blocks taken from a shuffled free list so block tables are
not contiguous) and compares every new token's logits with transformers fed the same chunks
through its own cache (:func:`hf_reference_logits`); :func:`check_against_transformers` does
all of it for one plan and returns the largest difference, and :func:`greedy_tokens` /
:func:`hf_greedy_tokens` compare greedy decoding.
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
from heron.layers import (
    UnsupportedBackendError,
    allocate_kv_caches,
    attention_needs,
    bind_attention_backend,
    select_attention_backend,
)
from heron.loader import build_model, load_checkpoint
from heron.plugins import registry

__all__ = (
    "MIXED_PLAN",
    "PagedRunner",
    "check_against_transformers",
    "check_on_every_backend",
    "greedy_tokens",
    "hf_greedy_tokens",
    "hf_reference_logits",
    "make_batch",
    "run_plan",
    "save_tiny_tokenizer",
    "tiny_checkpoint",
    "tiny_config",
)

#: vocabulary size of :func:`tiny_config` checkpoints
VOCAB = 256

#: request -> new tokens per step (absent = not scheduled): two prefills together, then one
#: request prefilling in chunks while two decode in the same batch, then decodes
MIXED_PLAN: list[dict[str, int]] = [
    {"b": 7, "c": 5},
    {"a": 6, "b": 1, "c": 1},
    {"a": 5, "b": 1, "c": 1},
    {"a": 1, "b": 1, "c": 1},
    {"a": 1},
]


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """A small transformers config of ``model_type`` (``"llama"``, ``"qwen3"``, ``"gemma2"``, ...).

    2 layers, width 64, 4 heads, 2 KV heads, 256-token vocabulary, weights drawn wide enough that
    masking and rope mistakes show in the logits; ``overrides`` are passed to the config class
    (use its own field names, e.g. ``n_embd`` for GPT-2). ``architectures`` is set to the
    causal-LM class transformers maps the model type to.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    base: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    base.update(overrides)
    config = AutoConfig.for_model(model_type, **base)
    config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]
    return config


def tiny_checkpoint(config: Any, path: Path | str, seed: int = 0, auto_class: Any = None) -> Any:
    """Save a random-weight transformers model for ``config`` under ``path``; return it (fp32, eager).

    ``auto_class`` builds it (default ``AutoModelForCausalLM``; e.g. ``AutoModel`` for an encoder).
    Biases and norm weights are drawn at random too (they are often initialised to 0 or 1, which
    would hide a missing bias or a ``1 + w`` norm).
    """
    if auto_class is None:
        from transformers import AutoModelForCausalLM as auto_class

    torch.manual_seed(seed)
    model = auto_class.from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
            elif "norm" in name.lower() and name.endswith(".weight"):
                p.normal_(1.0 if p.abs().mean() > 0.5 else 0.0, 0.2)  # keep 1-centred norms 1-centred
    model.save_pretrained(str(path))
    return model.eval()


def save_tiny_tokenizer(path: Path | str, vocab: int = VOCAB) -> Any:
    """Write a byte-level tokenizer of exactly 256 tokens (one per byte, no merges) to ``path``.

    With it a tiny checkpoint runs through ``LLM`` and ``heron serve``: any text encodes, and
    every id decodes. Token 0 (byte 0x00) doubles as the end-of-sequence token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab != 256:
        raise ValueError("the byte-level tiny tokenizer has exactly 256 tokens")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # the byte-to-unicode table GPT-2 uses: printable bytes map to themselves
    table = [chr(b) for b in range(256)]
    shifted = 0
    for b in range(256):
        if table[b] not in alphabet:
            table[b] = chr(256 + shifted)
            shifted += 1
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(table)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=table[0])
    tokenizer.save_pretrained(str(path))
    return tokenizer


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
    def load(
        cls,
        path: Path | str,
        backend: str,
        dtype: torch.dtype = torch.float32,
        model_impl: str = "auto",
        tp_rank: int = 0,
        tp_size: int = 1,
        **kw: Any,
    ) -> PagedRunner:
        """Build the checkpoint at ``path`` with attention backend ``backend`` (``"auto"``: as the engine picks).

        ``tp_rank``/``tp_size`` build this rank's shard of a tensor-parallel model (the caller has
        joined the process group; :mod:`heron.testing.parallel` does it all).

        Raises:
            UnsupportedBackendError: the backend declines what the model's layers need (a soft
                cap, a sliding window, a head size): the engine would not pick it either.
        """
        ctx = ModelContext(
            dtype=dtype, device=torch.device("cpu"), attention_backend=None, tp_rank=tp_rank, tp_size=tp_size
        )
        model = build_model(load_checkpoint(str(path)), ctx, model_impl=model_impl)
        needs = attention_needs(model)
        if backend == "auto":  # what the engine would pick: the first backend by priority that accepts it
            backend_cls, _ = select_attention_backend("auto", torch.device("cpu"), dtype, **needs)
        else:
            backend_cls = registry("attention_backends").load(backend)
            why_not = backend_cls.supports(torch.device("cpu"), dtype, **needs)
            if why_not is not None:
                raise UnsupportedBackendError(f"{backend}: {why_not}")
        instance = backend_cls()
        bind_attention_backend(model, instance)
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


def run_plan(
    runner: PagedRunner, plan: list[dict[str, int]] = MIXED_PLAN, vocab: int = VOCAB, seed: int = 0
) -> tuple[dict[str, list[list[int]]], dict[str, torch.Tensor]]:
    """Feed random tokens through ``runner`` step by step as ``plan`` says.

    Returns:
        (each request's chunks of token ids, each request's logits for all its tokens [n, vocab]).
    """
    rng = random.Random(seed)
    chunks: dict[str, list[list[int]]] = {}
    logits: dict[str, list[torch.Tensor]] = {}
    for step in plan:
        new = {rid: [rng.randrange(vocab) for _ in range(n)] for rid, n in step.items()}
        for rid, out in runner.step(new).items():
            chunks.setdefault(rid, []).append(new[rid])
            logits.setdefault(rid, []).append(out)
    return chunks, {rid: torch.cat(parts) for rid, parts in logits.items()}


def hf_reference_logits(hf_model: Any, chunks: list[list[int]]) -> torch.Tensor:
    """transformers' logits for one request fed chunk by chunk through its KV cache: [n, vocab].

    A fresh copy of the model per request keeps stateful rope (dynamic) from leaking across.
    """
    model = copy.deepcopy(hf_model)
    # transformers 5.x renamed ``past_key_values`` to ``cache``; accept both
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache, out, seen = None, [], 0
    with torch.inference_mode():
        for chunk in chunks:
            # explicit positions: some models (GPT-2) otherwise derive them from a mask
            positions = torch.arange(seen, seen + len(chunk))[None]
            res = model(input_ids=torch.tensor([chunk]), position_ids=positions, use_cache=True, **{key: cache})
            cache = getattr(res, key)
            out.append(res.logits[0].float())
            seen += len(chunk)
    return torch.cat(out)


def check_against_transformers(
    path: Path | str,
    hf_model: Any,
    backend: str,
    plan: list[dict[str, int]] = MIXED_PLAN,
    model_impl: str = "auto",
    seed: int = 0,
) -> float:
    """Run ``plan`` through heron (fp32) and transformers; the largest absolute logit difference.

    Raises:
        UnsupportedBackendError: ``backend`` declines the model.
    """
    runner = PagedRunner.load(path, backend, model_impl=model_impl)
    vocab = hf_model.config.get_text_config().vocab_size
    chunks, logits = run_plan(runner, plan, vocab, seed)
    worst = 0.0
    for rid, got in logits.items():
        want = hf_reference_logits(hf_model, chunks[rid])
        worst = max(worst, float((got.float() - want).abs().max()))
    return worst


def check_on_every_backend(
    path: Path | str, hf_model: Any, model_impl: str = "auto", atol: float = 1e-4
) -> dict[str, float]:
    """:func:`check_against_transformers` on every installed attention backend that accepts the model.

    A backend that declines must say so by name (``UnsupportedBackendError("<name>: why")``).

    Returns:
        backend name -> largest absolute logit difference.
    Raises:
        AssertionError: no backend accepted the model, or one differs by ``atol`` or more.
    """
    diffs: dict[str, float] = {}
    for backend in registry("attention_backends").names():
        try:
            diffs[backend] = check_against_transformers(path, hf_model, backend, model_impl=model_impl)
        except UnsupportedBackendError as err:
            assert str(err).startswith(f"{backend}: "), err
    assert diffs, f"{path}: no attention backend accepted the model"
    assert max(diffs.values()) < atol, f"{path}: max |logit diff| per backend {diffs}"
    return diffs


def greedy_tokens(runner: PagedRunner, prompt: list[int], max_new_tokens: int, rid: str = "g") -> list[int]:
    """Greedy decoding through ``runner``: the prompt as one prefill, then one token per step."""
    logits = runner.step({rid: list(prompt)})[rid][-1]
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(logits.argmax())
        out.append(token)
        logits = runner.step({rid: [token]})[rid][-1]
    return out


def hf_greedy_tokens(hf_model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' ``generate`` with ``do_sample=False`` (no stop token): the new token ids."""
    with torch.inference_mode():
        out = hf_model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()
