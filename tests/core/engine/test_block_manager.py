from heron.engine.block_manager import BlockManager
from tests.core.engine.fakes import make_seq


def _run_prefill(bm: BlockManager, seq) -> None:
    assert bm.allocate(seq, seq.num_tokens - seq.num_computed_tokens)
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)


def test_allocation_and_free_return_every_block():
    bm = BlockManager(8, 4)
    seq = make_seq(list(range(10)))
    assert bm.allocate(seq, 10)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    assert bm.usage() == 3 / 8
    bm.free_seq(seq)
    bm.check_no_leaks()


def test_allocation_fails_without_taking_anything():
    bm = BlockManager(2, 4)
    seq = make_seq(list(range(12)))
    assert not bm.allocate(seq, 12)
    assert seq.block_table == [] and bm.num_free_blocks == 2


def test_prefix_hit_shares_blocks_and_leaves_a_token_to_compute():
    bm = BlockManager(16, 4)
    a = make_seq(list(range(12)))
    _run_prefill(bm, a)
    b = make_seq(list(range(12)))
    assert bm.match_prefix(b) == 8  # 3 full blocks, but the last token must be computed
    assert b.block_table == a.block_table[:2]
    assert all(bm.ref_counts[x] == 2 for x in b.block_table)
    c = make_seq(list(range(8)) + [99, 98, 97, 96, 95])
    assert bm.match_prefix(c) == 8
    d = make_seq([1] + list(range(1, 12)))
    assert bm.match_prefix(d) == 0  # the first block differs, so nothing after it matches
    for s in (a, b, c, d):
        bm.free_seq(s)
    bm.check_no_leaks()
    assert bm.prefix_hits == 16


def test_cache_salt_separates_tenants():
    bm = BlockManager(16, 4)
    a = make_seq(list(range(9)), salt="alice")
    _run_prefill(bm, a)
    assert bm.match_prefix(make_seq(list(range(9)), salt="bob")) == 0
    assert bm.match_prefix(make_seq(list(range(9)), salt="alice")) == 8


def test_freed_cached_blocks_survive_until_needed_then_lru_evicts():
    bm = BlockManager(4, 4)
    a = make_seq(list(range(8)) + [50])
    _run_prefill(bm, a)  # 3 blocks: two full (cached), one partial
    bm.free_seq(a)
    bm.check_no_leaks()
    b = make_seq(list(range(8)) + [60])
    assert bm.match_prefix(b) == 8  # still cached after being freed
    bm.free_seq(b)
    # fill the pool with something else: the cached blocks get evicted and forgotten
    c = make_seq(list(range(100, 116)))
    _run_prefill(bm, c)
    bm.free_seq(c)
    assert bm.match_prefix(make_seq(list(range(8)) + [70])) == 0
    assert len(bm.cached) == 4  # c's full blocks


# -- prefix-cache keys ---------------------------------------------------------------------


def _shares(first, second, bs: int = 4) -> int:
    """Commit ``first``'s blocks, then return how many tokens ``second`` finds in the cache."""
    bm = BlockManager(16, bs)
    assert bm.allocate(first, first.num_tokens)
    first.num_computed_tokens = first.num_tokens
    bm.commit(first)
    return bm.match_prefix(second)


def test_prefix_keys_are_sha256_digests_over_parent_tokens_salt_and_extra():
    import hashlib
    from array import array

    from heron.engine.block_manager import block_key

    key = block_key(None, [1, 2, 3, 4], "tenant")
    manual = hashlib.sha256(bytes(32))
    manual.update((4).to_bytes(8, "little"))
    manual.update(array("q", [1, 2, 3, 4]).tobytes())
    manual.update(b"\x01" + (6).to_bytes(8, "little") + b"tenant")
    manual.update(b"\x00")
    assert key == manual.digest() and len(key) == 32
    child = block_key(key, [5, 6, 7, 8], "tenant")
    assert child != block_key(None, [5, 6, 7, 8], "tenant")  # the parent is part of the key
    assert block_key(None, [1], None, "a") != block_key(None, [1], "a", None)  # fields do not blur
    assert block_key(None, [1], "", None) != block_key(None, [1], None, None)


def test_different_salts_or_extra_keys_never_share_blocks():
    tokens = list(range(13))
    assert _shares(make_seq(tokens, salt="a"), make_seq(tokens, salt="a")) == 12
    assert _shares(make_seq(tokens, salt="a"), make_seq(tokens, salt="b")) == 0
    assert _shares(make_seq(tokens), make_seq(tokens, salt="b")) == 0
    def adapter(name: str | None):
        seq = make_seq(tokens)
        seq.request.cache_key_extra = name
        return seq

    assert _shares(adapter("lora:a"), adapter("lora:b")) == 0
    assert _shares(adapter(None), adapter("lora:b")) == 0
    assert _shares(adapter("lora:a"), adapter("lora:a")) == 12


def test_a_python_hash_collision_does_not_share_blocks():
    honest = [1, 2, 3, 1, 9]
    forged = [1, 2, 3, 2**61, 9]  # hash(2**61) == hash(1): the blocks' token tuples collide under hash()
    assert hash(tuple(honest[:4])) == hash(tuple(forged[:4])) and honest[:4] != forged[:4]
    assert _shares(make_seq(honest), make_seq(forged)) == 0
    assert _shares(make_seq(honest), make_seq(list(honest))) == 4
