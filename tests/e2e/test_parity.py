"""Greedy decoding matches transformers token for token, however the engine batches and caches.

8 chat prompts x 64 tokens (EOS ignored), fp32, against transformers' own Llama on the same
weights: one request at a time, all at once, with the prefix cache on and off, with prefill
chunked into 32-token steps, and with a KV pool so small that requests are preempted and
recomputed.
"""

from __future__ import annotations

import pytest
import torch

from heron import SamplingParams
from heron.engine.block_manager import BlockManager

pytestmark = pytest.mark.slow

TOKENS = 64


@pytest.fixture(scope="module")
def reference(hf_model, chat_prompts) -> list[list[int]]:
    out = []
    with torch.inference_mode():
        for ids in chat_prompts:
            gen = hf_model.generate(torch.tensor([ids]), max_new_tokens=TOKENS, min_new_tokens=TOKENS,
                                    do_sample=False, eos_token_id=None, pad_token_id=0)
            out.append(gen[0, len(ids):].tolist())
    return out


def _generate(llm, prompts, warm=None, **engine_changes):
    engine = llm.engine
    saved = (engine.blocks, engine.scheduler.blocks, engine.scheduler.max_num_batched_tokens)
    try:
        if "num_blocks" in engine_changes or "prefix_caching" in engine_changes:
            blocks = BlockManager(engine_changes.get("num_blocks", engine.num_kv_blocks), engine.blocks.block_size,
                                  enable_prefix_caching=engine_changes.get("prefix_caching", True))
            engine.blocks = engine.scheduler.blocks = blocks
        if "max_num_batched_tokens" in engine_changes:
            engine.scheduler.max_num_batched_tokens = engine_changes["max_num_batched_tokens"]
        params = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)
        if warm:
            llm.generate([{"prompt_token_ids": p} for p in warm], params, use_tqdm=False)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        engine.blocks.check_no_leaks()
        return [o.outputs[0].token_ids for o in outs], engine.blocks
    finally:
        engine.blocks, engine.scheduler.blocks, engine.scheduler.max_num_batched_tokens = saved


def _first_difference(got, want):
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            k = next(j for j, (a, b) in enumerate(zip(g, w, strict=True)) if a != b)
            return f"prompt {i} differs at token {k}: {g[k:k + 5]} vs {w[k:k + 5]}"
    return None


def test_one_at_a_time(llm32, chat_prompts, reference):
    got = [_generate(llm32, [p], prefix_caching=False)[0][0] for p in chat_prompts]
    assert _first_difference(got, reference) is None


def test_batched_without_prefix_cache(llm32, chat_prompts, reference):
    got, _ = _generate(llm32, chat_prompts, prefix_caching=False)
    assert _first_difference(got, reference) is None


def test_batched_with_prefix_cache_hits(llm32, chat_prompts, reference):
    # the first prompt runs first, so the others find the shared system-prompt blocks cached
    got, blocks = _generate(llm32, chat_prompts, warm=chat_prompts[:1], prefix_caching=True)
    assert _first_difference(got, reference) is None
    assert blocks.prefix_hits > 0


def test_chunked_prefill(llm32, chat_prompts, reference):
    got, _ = _generate(llm32, chat_prompts, max_num_batched_tokens=32, prefix_caching=False)
    assert _first_difference(got, reference) is None


def test_forced_preemption(llm32, chat_prompts, reference):
    before = llm32.engine.scheduler.num_preemptions
    got, _ = _generate(llm32, chat_prompts, num_blocks=24)
    assert llm32.engine.scheduler.num_preemptions > before
    assert _first_difference(got, reference) is None
