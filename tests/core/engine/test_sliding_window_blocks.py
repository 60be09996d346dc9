"""Window mode: when every attention layer slides, blocks out of the window are freed while a request runs.

Unit tests drive :class:`BlockManager` and :class:`Scheduler` with model-free sequences; the engine
tests run a tiny random Mistral (window 8, block size 4) in fp32 and compare greedy tokens with
transformers' ``generate`` and with the same engine with freeing turned off.
"""

from __future__ import annotations

import random

import pytest

from heron.engine.block_manager import BlockManager
from heron.engine.scheduler import Scheduler
from tests.core.engine.fakes import make_seq

W, BS = 8, 4
#: blocks one decoding sequence holds at most: those the window of the token being computed spans
WINDOW_BLOCKS = -(-(W - 1) // BS) + 1


def _check_refcounts(bm: BlockManager, seqs) -> None:
    """Every usable block's ref count equals the live tables holding it; free = unreferenced; null untouched."""
    held: dict[int, int] = {}
    for seq in seqs:
        for block in seq.block_table:
            if block != bm.null_block:
                held[block] = held.get(block, 0) + 1
    assert bm.null_block not in held and bm.ref_counts[bm.null_block] == 0 and bm.null_block not in bm.free
    for block in range(1, bm.num_blocks):
        assert bm.ref_counts[block] == held.get(block, 0), block
        assert (block in bm.free) == (held.get(block, 0) == 0), block
    for seq in seqs:  # dropped entries are a prefix of the table
        live = [b != bm.null_block for b in seq.block_table]
        assert live == sorted(live)


def _compute(bm: BlockManager, seq, n: int, token: int | None = None) -> None:
    """What a step does to ``seq``: make room, compute ``n`` tokens, register full blocks, sample one."""
    assert bm.allocate(seq, n)
    seq.num_computed_tokens += n
    bm.commit(seq)
    if token is not None and seq.num_computed_tokens == seq.num_tokens:
        seq.token_ids.append(token)


def _evict(bm: BlockManager, block: int) -> None:
    """Forget ``block``'s cached contents, as when the pool hands it out again."""
    bm.cached.pop(bm.block_hash[block])
    bm.block_hash[block] = None


# -- block manager -----------------------------------------------------------------------------


def test_blocks_are_freed_as_the_window_moves():
    bm = BlockManager(16, BS, sliding_window=W)
    assert bm.num_usable_blocks == 15 and bm.num_free_blocks == 15
    seq = make_seq(list(range(1, 11)))
    _compute(bm, seq, 10, token=3)
    assert len(seq.block_table) == 3 and bm.null_block not in seq.block_table
    first_blocks = list(seq.block_table)
    for _ in range(40):
        p = seq.num_computed_tokens
        _compute(bm, seq, 1, token=3)
        dropped = max(0, (p - W + 1) // BS)  # blocks whose last position is <= p - W
        assert seq.block_table[:dropped] == [bm.null_block] * dropped
        assert bm.null_block not in seq.block_table[dropped:]
        assert len(seq.block_table) - dropped <= WINDOW_BLOCKS
        _check_refcounts(bm, [seq])
    assert bm.num_free_blocks == bm.num_usable_blocks - sum(b != bm.null_block for b in seq.block_table)
    assert all(bm.block_hash[b] is not None for b in first_blocks)  # dropped full blocks stay cached
    bm.free_seq(seq)
    bm.check_no_leaks()
    assert bm.usage() == 0.0


def test_the_null_block_is_never_handed_out():
    bm = BlockManager(5, BS, sliding_window=W)
    seq = make_seq(list(range(16)))
    assert bm.allocate(seq, 16)
    assert sorted(seq.block_table) == [1, 2, 3, 4] and bm.usage() == 1.0
    assert not bm.allocate(make_seq([1]), 1)
    bm.free_seq(seq)
    bm.check_no_leaks()
    assert BlockManager(5, BS).num_free_blocks == 5  # no window: nothing reserved
    with pytest.raises(ValueError, match="at least 2 blocks"):
        BlockManager(1, BS, sliding_window=W)


def test_window_of_layers_needs_every_layer_to_slide():
    class L:
        def __init__(self, w):
            self.sliding_window = w

    assert BlockManager.sliding_window_of([L(8), L(16)]) == 16  # the widest window decides what is dropped
    assert BlockManager.sliding_window_of([L(8), L(None)]) is None
    assert BlockManager.sliding_window_of([]) is None


def test_prefix_hit_needs_only_the_blocks_in_the_window():
    prompt = list(range(1, 41))  # 10 full blocks
    bm = BlockManager(8, BS, sliding_window=W)  # 7 usable: the early blocks get evicted while it runs
    a = make_seq(prompt)
    for _ in range(10):
        _compute(bm, a, 4)
    hashes = list(a.block_hashes)
    bm.free_seq(a)
    assert hashes[0] not in bm.cached  # the first block was evicted
    b = make_seq(prompt + [7])
    assert bm.match_prefix(b) == 40  # the query at 40 sees positions 33..40: blocks 8 and 9
    assert b.block_table == [bm.null_block] * 8 + [bm.cached[hashes[8]], bm.cached[hashes[9]]]
    _check_refcounts(bm, [b])
    _compute(bm, b, 1, token=5)
    bm.free_seq(b)
    c = make_seq(prompt)
    # block 7 (positions 28..31) gone: a hit at 36 would need it, one at 28 needs blocks 5 and 6 only
    _evict(bm, bm.cached[hashes[7]])
    assert bm.match_prefix(c) == 28
    assert c.block_table[:5] == [bm.null_block] * 5 and bm.null_block not in c.block_table[5:]
    assert c.block_hashes == hashes[:7]
    bm.free_seq(c)
    bm.check_no_leaks()
    # without the window the same cache gives nothing: its first block is gone
    plain = BlockManager(8, BS)
    plain.cached, plain.block_hash = dict(bm.cached), list(bm.block_hash)
    assert plain.match_prefix(make_seq(prompt)) == 0


def test_a_forked_sibling_shares_only_the_window():
    bm = BlockManager(32, BS, sliding_window=W)
    parent = make_seq(list(range(1, 22)))
    for n in (8, 8, 5):  # chunked prefill: the chunk at 16 dropped blocks 0 and 1
        _compute(bm, parent, n)
    child = make_seq(list(range(1, 22)))
    assert bm.fork(parent, child) == 20
    assert child.block_table == [bm.null_block] * 3 + parent.block_table[3:5]
    _check_refcounts(bm, [parent, child])
    for s in (parent, child):
        bm.free_seq(s)
    bm.check_no_leaks()


def _run(sched: Scheduler, seqs, length: int, rng: random.Random) -> int:
    """Step ``sched`` until every sequence has ``length`` tokens, checking ref counts each step."""
    for seq in seqs:
        sched.add(seq)
    steps = 0
    while sched.has_unfinished():
        out = sched.schedule()
        assert out.scheduled, "the scheduler is stuck"
        for item in out.scheduled:
            seq = item.seq
            seq.num_computed_tokens += item.num_new_tokens
            sched.blocks.commit(seq)
            if item.samples:
                seq.token_ids.append(rng.randrange(1, 50))
                if seq.num_tokens >= length:
                    sched.remove(seq)
        _check_refcounts(sched.blocks, sched.running + [s for s in seqs if s.block_table and s not in sched.running])
        steps += 1
    return steps


def test_finish_and_preemption_free_every_block_exactly_once():
    rng = random.Random(0)
    bm = BlockManager(9, BS, sliding_window=W)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=32, max_model_len=200)
    seqs = [make_seq([rng.randrange(1, 50) for _ in range(n)]) for n in (13, 6, 22, 9)]
    _run(sched, seqs, 60, rng)
    assert sched.num_preemptions > 0  # 4 sequences x 3 window blocks do not fit in 8
    assert all(s.num_tokens >= 60 and s.block_table == [] for s in seqs)
    bm.check_no_leaks()


def test_a_sequence_far_longer_than_the_pool_runs_in_window_mode_only():
    rng = random.Random(1)
    bm = BlockManager(4, BS, sliding_window=W)  # 3 usable blocks: 12 tokens
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64, max_model_len=200)
    long = make_seq([rng.randrange(1, 50) for _ in range(50)])
    _run(sched, [long], 120, rng)  # the 50-token prompt is computed in chunks that fit
    bm.check_no_leaks()
    plain = Scheduler(BlockManager(4, BS), max_num_seqs=4, max_num_batched_tokens=64, max_model_len=200)
    with pytest.raises(ValueError, match="KV blocks"):
        plain.add(make_seq(list(range(50))))
    tight = Scheduler(BlockManager(3, BS, sliding_window=W), max_num_seqs=4, max_num_batched_tokens=64,
                      max_model_len=200)
    with pytest.raises(ValueError, match="needs 3 KV blocks but the cache has only 2"):
        tight.add(make_seq(list(range(50))))


# -- engine: a tiny Mistral whose every layer slides ------------------------------------------------

TOKENS = 120
_rng = random.Random(7)
PROMPTS = [[_rng.randrange(1, 256) for _ in range(n)] for n in (5, 23, 41)]


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    """(checkpoint path, the transformers model) of a 2-layer Mistral with a window of 8 tokens."""
    from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config

    path = tmp_path_factory.mktemp("mistral_swa")
    hf = tiny_checkpoint(tiny_config("mistral", sliding_window=W, max_position_embeddings=256), path)
    save_tiny_tokenizer(path)
    return str(path), hf


@pytest.fixture(scope="module")
def hf_tokens(mistral) -> list[list[int]]:
    from heron.testing.models import hf_greedy_tokens

    return [hf_greedy_tokens(mistral[1], p, TOKENS) for p in PROMPTS]


def _greedy():
    from heron.engine import SamplingParams

    return SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)


def _drive(engine, prompts) -> tuple[list[list[int]], int]:
    """Run ``prompts`` together; their output ids and the most blocks a decoding sequence held after a step."""
    reqs = [engine.add_request(f"swa{i}", None, _greedy(), prompt_token_ids=p) for i, p in enumerate(prompts)]
    peak = 0
    while engine.has_unfinished():
        engine.step()
        for seq in engine.scheduler.running:
            if seq.num_output_tokens > 1:  # decoding (the prompt's blocks are dropped from the 2nd decode)
                peak = max(peak, sum(b != engine.blocks.null_block for b in seq.block_table))
    return [r.seqs[0].token_ids[r.seqs[0].num_prompt_tokens:] for r in reqs], peak


def _assert_null_block_is_zero(engine) -> None:
    """No step wrote into the null block of any layer's cache (whatever axis the backend puts blocks on)."""
    from heron.layers import attention_layers

    for layer in attention_layers(engine.model):
        one = engine.backend_cls.kv_cache_shape(1, BS, layer.num_kv_heads, layer.head_size)
        two = engine.backend_cls.kv_cache_shape(2, BS, layer.num_kv_heads, layer.head_size)
        axis = next(i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b)
        null = layer.kv_cache.select(axis, engine.blocks.null_block)
        assert not null.any(), f"layer {layer.layer_idx} wrote into the null block"
        assert layer.kv_cache.any()  # ... while the other blocks were written


@pytest.mark.parametrize("backend", ["eager", "torch_sdpa", "cpu_paged"])
def test_freeing_gives_the_same_tokens_in_a_pool_far_too_small_without_it(mistral, hf_tokens, backend):
    from heron import LLM

    llm = LLM(mistral[0], dtype="float32", block_size=BS, num_kv_blocks=48, max_model_len=192,
              attention_backend=backend)
    engine = llm.engine
    assert engine.blocks.sliding_window == W and engine.blocks.num_usable_blocks == 47
    tokens, peak = _drive(engine, PROMPTS)
    assert tokens == hf_tokens
    # without freeing the three would need 32 + 36 + 41 blocks at the end; with it they never wait
    assert engine.scheduler.num_preemptions == 0 and peak <= WINDOW_BLOCKS
    engine.blocks.check_no_leaks()
    _assert_null_block_is_zero(engine)
    # the same engine and cache with freeing off (a plain block manager), one prompt at a time
    saved = engine.blocks
    engine.blocks = engine.scheduler.blocks = BlockManager(engine.num_kv_blocks, BS)
    try:
        off = [llm.generate([{"prompt_token_ids": p}], _greedy(), use_tqdm=False)[0].outputs[0].token_ids
               for p in PROMPTS]
        engine.blocks.check_no_leaks()
    finally:
        engine.blocks = engine.scheduler.blocks = saved
    assert off == tokens


def test_a_shared_long_prompt_hits_the_prefix_cache(mistral, hf_tokens):
    from heron import LLM
    from heron.testing.models import hf_greedy_tokens

    llm = LLM(mistral[0], dtype="float32", block_size=BS, num_kv_blocks=64)
    long = PROMPTS[2]  # 41 tokens: 10 full blocks, of which a hit at 40 needs blocks 8 and 9 only
    first = llm.generate([{"prompt_token_ids": long}], _greedy(), use_tqdm=False)[0]
    assert first.num_cached_tokens == 0 and first.outputs[0].token_ids == hf_tokens[2]
    again = llm.generate([{"prompt_token_ids": long}], _greedy(), use_tqdm=False)[0]
    assert again.num_cached_tokens == 40 and again.outputs[0].token_ids == hf_tokens[2]
    longer = long + [17, 18, 19, 20, 21]
    other = llm.generate([{"prompt_token_ids": longer}], _greedy(), use_tqdm=False)[0]
    assert other.num_cached_tokens == 40
    assert other.outputs[0].token_ids == hf_greedy_tokens(mistral[1], longer, TOKENS)
    llm.engine.blocks.check_no_leaks()
