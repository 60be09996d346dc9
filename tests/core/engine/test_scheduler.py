import pytest

from heron.engine.block_manager import BlockManager
from heron.engine.request import SequenceStatus
from heron.engine.scheduler import Scheduler
from tests.core.engine.fakes import make_seq


def _step(sched: Scheduler, sample_token: int = 7):
    """What the engine does after the forward: count computed tokens, append sampled ones."""
    out = sched.schedule()
    for item in out.scheduled:
        item.seq.num_computed_tokens += item.num_new_tokens
        sched.blocks.commit(item.seq)
        if item.samples:
            item.seq.token_ids.append(sample_token)
    return out


def test_chunked_prefill_and_decode_share_a_step():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10, max_model_len=100)
    a, b = make_seq(list(range(3))), make_seq(list(range(20, 45)))
    sched.add(a)
    sched.add(b)
    out = _step(sched)
    assert [(i.seq, i.num_new_tokens, i.samples) for i in out.scheduled] == [(a, 3, True), (b, 7, False)]
    out = _step(sched)
    assert [(i.seq, i.num_new_tokens, i.samples) for i in out.scheduled] == [(a, 1, True), (b, 9, False)]
    out = _step(sched)
    assert [(i.seq, i.num_new_tokens, i.samples) for i in out.scheduled] == [(a, 1, True), (b, 9, True)]
    assert out.num_tokens == 10


def test_max_num_seqs_limits_admission():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=2, max_num_batched_tokens=100, max_model_len=100)
    seqs = [make_seq([1, 2, 3]) for _ in range(3)]
    for s in seqs:
        sched.add(s)
    out = _step(sched)
    assert [i.seq for i in out.scheduled] == seqs[:2]
    assert len(sched.waiting) == 1


def test_preemption_frees_the_last_and_requeues_it_first():
    bm = BlockManager(4, 4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100, max_model_len=100)
    a, b = make_seq(list(range(7))), make_seq(list(range(10, 17)))
    sched.add(a)
    sched.add(b)
    _step(sched)
    _step(sched)  # each holds 2 full blocks, 9 tokens (8 computed) now
    out = _step(sched)  # both need a third block: b is preempted for a
    assert out.preempted == [b]
    assert b.status is SequenceStatus.WAITING and b.block_table == [] and b.num_computed_tokens == 0
    assert b.num_tokens == 9  # its generated token is kept and will be recomputed
    assert [i.seq for i in out.scheduled] == [a]
    assert sched.num_preemptions == 1
    sched.remove(a)
    out = _step(sched)
    # b's first block survived in the prefix cache (its tail block was evicted for a's growth)
    assert out.scheduled[0].seq is b and out.scheduled[0].num_new_tokens == 9 - 4
    sched.remove(b)
    bm.check_no_leaks()


def test_priority_policy_admits_by_priority_then_arrival():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=1, max_num_batched_tokens=100, max_model_len=100,
                      policy="priority")
    late_urgent = make_seq([1, 2], priority=-1, arrival=5.0)
    early = make_seq([1, 2], priority=0, arrival=1.0)
    sched.add(early)
    sched.add(late_urgent)
    assert _step(sched).scheduled[0].seq is late_urgent


def test_prompt_too_long_or_too_big_for_the_pool_is_refused():
    sched = Scheduler(BlockManager(2, 4), max_num_seqs=8, max_num_batched_tokens=100, max_model_len=100)
    with pytest.raises(ValueError, match="max_model_len"):
        sched.add(make_seq(list(range(101))))
    with pytest.raises(ValueError, match="KV blocks"):
        sched.add(make_seq(list(range(20))))


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="fcfs"):
        Scheduler(BlockManager(4, 4), max_num_seqs=1, max_num_batched_tokens=8, max_model_len=8, policy="lifo")
