"""``DataParallelClient`` over fake replicas: CPU shares, prefix affinity, load balancing, abort
routing, control fan-out with one combined result, combined stats, and a dying replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from heron.engine import (
    AsyncEngine,
    CompletionOutput,
    EngineConfig,
    RequestOutput,
    SamplingParams,
    dp_client,
)
from heron.engine.dp_client import DataParallelClient, replica_configs
from heron.engine.errors import EngineDeadError
from tests.core.engine.test_async_engine import FakeEngine

BS = 4  # block size of the fake replicas


class FakeReplica:
    """An engine client that yields one delta at once and finishes when ``release`` is set."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.engine = SimpleNamespace(config=EngineConfig(block_size=BS, max_num_seqs=8), vocab_size=300)
        self.tokenizer, self.max_model_len, self.generation_defaults = f"tok{index}", 128, {"temperature": 0.5}
        self.error: BaseException | None = None
        self.alive = True
        self.on_failure = None
        self.is_sleeping = False
        self.submitted: dict[str, dict] = {}
        self.aborted: list[str] = []
        self.calls: list[tuple] = []
        self.fail_calls: set[str] = set()
        self.release = asyncio.Event()

    async def generate(self, ids, params, rid, **kw):
        self.submitted[rid] = kw
        yield RequestOutput(rid, None, ids, [CompletionOutput(0, "a", [7])])
        await self.release.wait()
        yield RequestOutput(rid, None, ids, [CompletionOutput(0, "b", [8], finish_reason="length")], finished=True)

    def abort(self, rid):
        self.aborted.append(rid)

    async def _call(self, name, *args, result=None):
        self.calls.append((name, *args))
        await asyncio.sleep(0.01 * (2 - self.index))  # replica 1 answers first: the order must not matter
        if name in self.fail_calls:
            raise ValueError(f"{name} failed on replica {self.index}")
        return result

    async def add_lora(self, req):
        return await self._call("add_lora", req)

    async def remove_lora(self, name):
        return await self._call("remove_lora", name, result=self.index == 1)

    async def reset_prefix_cache(self):
        return await self._call("reset_prefix_cache", result=10 + self.index)

    async def sleep(self, level, mode):
        return await self._call("sleep", level, mode)

    async def wake_up(self, tags):
        return await self._call("wake_up", tags)

    async def start_profile(self, directory):
        return await self._call("start_profile", directory)

    async def stop_profile(self):
        return await self._call("stop_profile", result=[Path("/t/shared.json"), Path(f"/t/r{self.index}.json")])

    def list_loras(self):
        return [f"lora-of-{self.index}"]

    def stats(self):
        return {"num_running": 1 + self.index, "num_waiting": 2, "kv_cache_usage": 0.2 * (self.index + 1),
                "num_prompt_tokens": 100 * (self.index + 1), "sleep_level": self.index,
                "lora": {"max_lora": 2, "running": [f"a{self.index}"], "waiting": []}}

    def shutdown(self, timeout=10.0):
        self.calls.append(("shutdown",))


def make(n: int = 2, **kw) -> tuple[DataParallelClient, list[FakeReplica]]:
    fakes = [FakeReplica(i) for i in range(n)]
    return DataParallelClient(fakes, **kw), fakes


async def open_request(dp: DataParallelClient, ids: list[int], rid: str, **kw) -> tuple[asyncio.Task, int]:
    """Start ``rid`` and read its first delta; returns (the task finishing it, the replica serving it)."""
    stream = dp.generate(ids, SamplingParams(max_tokens=2), rid, **kw)
    await stream.__anext__()

    async def rest():
        return [out async for out in stream]

    return asyncio.ensure_future(rest()), dp._owner[rid]


def prompt(prefix: int, suffix: int, length: int = 4 * BS) -> list[int]:
    """``length`` tokens: all but the last block from ``prefix``, the last block from ``suffix``."""
    return [prefix] * (length - BS) + [suffix] * BS


# -- CPU shares -----------------------------------------------------------------------------------


def test_replica_configs_split_physical_cores(monkeypatch):
    monkeypatch.setattr(dp_client.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(dp_client, "_core_groups", lambda cpus: [[c, c + 4] for c in cpus if c < 4])  # 4 HT cores
    base = EngineConfig(max_num_seqs=7)
    two = replica_configs(base, 2)
    assert [(c.cpu_affinity, c.num_threads) for c in two] == [([0, 1, 4, 5], 2), ([2, 3, 6, 7], 2)]
    assert all(c.max_num_seqs == 7 for c in two) and base.cpu_affinity is None
    three = replica_configs(base, 3)  # uneven: 1, 1, 2 cores
    assert [(c.cpu_affinity, c.num_threads) for c in three] == [([0, 4], 1), ([1, 5], 1), ([2, 3, 6, 7], 2)]
    six = replica_configs(base, 6)  # more replicas than cores: logical CPUs
    assert [c.cpu_affinity for c in six] == [[0], [1], [2, 3], [4], [5], [6, 7]]
    tp = replica_configs(EngineConfig(tensor_parallel_size=2), 2)  # each rank of a replica: half its cores
    assert [(c.cpu_affinity, c.num_threads) for c in tp] == [([0, 1, 4, 5], 1), ([2, 3, 6, 7], 1)]


def test_replica_configs_on_this_machine_and_oversubscribed(monkeypatch, caplog):
    monkeypatch.setattr(dp_client.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(dp_client, "_core_groups", lambda cpus: [[c] for c in cpus])
    assert [(c.cpu_affinity, c.num_threads) for c in replica_configs(EngineConfig(), 2)] == [([0], 1), ([1], 1)]
    assert [(c.cpu_affinity, c.num_threads) for c in replica_configs(EngineConfig(), 1)] == [([0, 1], 2)]
    with caplog.at_level("WARNING", logger="heron.engine"):
        shared = replica_configs(EngineConfig(), 3)
    assert [(c.cpu_affinity, c.num_threads) for c in shared] == [([0], 1), ([1], 1), ([0], 1)]
    assert "share 2 CPUs" in caplog.text
    with pytest.raises(ValueError, match="at least 1"):
        replica_configs(EngineConfig(), 0)


def test_core_groups_reads_the_real_topology():
    import os

    cpus = sorted(os.sched_getaffinity(0))
    groups = dp_client._core_groups(cpus)
    assert sorted(c for g in groups for c in g) == cpus and len(groups) >= 1


# -- routing --------------------------------------------------------------------------------------


def test_facts_come_from_replica_zero():
    dp, fakes = make()
    assert dp.tokenizer == "tok0" and dp.max_model_len == 128 and dp.engine is fakes[0].engine
    assert dp.generation_defaults == {"temperature": 0.5} and dp.vocab_size == 300
    assert dp.list_loras() == ["lora-of-0"] and dp.block_size == BS and dp.slack == 2


def test_a_shared_prefix_goes_to_the_same_replica_and_distinct_prompts_spread():
    dp, fakes = make()

    async def scenario():
        tasks, where = [], {}
        for rid, ids in (("a", prompt(1, 1)), ("b", prompt(2, 2)), ("a2", prompt(1, 9)), ("c", prompt(3, 3)),
                         ("b2", prompt(2, 8)), ("d", prompt(4, 4))):
            task, where[rid] = await open_request(dp, ids, rid)
            tasks.append(task)
        for f in fakes:
            f.release.set()
        await asyncio.gather(*tasks)
        return where

    where = asyncio.run(scenario())
    assert where["a"] == where["a2"] and where["b"] == where["b2"] and where["a"] != where["b"]
    assert {where["c"], where["d"]} == {0, 1}  # least loaded, then the other
    assert dp.stats()["num_affinity_routed"] == 2 and dp._load == [0, 0] and dp._owner == {}


def test_an_overloaded_affinity_replica_is_bypassed():
    dp, fakes = make(slack=1)

    async def scenario():
        tasks, where = [], []
        for i in range(4):  # the same 3-block prefix: 0, 0 (load 1 vs 0), then 1 (load 2 vs 0 > slack), 1
            task, index = await open_request(dp, prompt(5, 10 + i), f"r{i}")
            tasks.append(task)
            where.append(index)
        for f in fakes:
            f.release.set()
        await asyncio.gather(*tasks)
        return where

    assert asyncio.run(scenario()) == [0, 0, 1, 1]  # replica 1 became the prefix's home


def test_a_short_shared_prefix_does_not_pin_and_the_cache_key_matters():
    dp, fakes = make()

    async def scenario():
        tasks, where = [], []
        template = [9] * BS
        for rid, ids, kw in (("t1", template + [1] * 3 * BS, {}), ("t2", template + [2] * 3 * BS, {}),  # 1/4 shared
                             ("s1", prompt(6, 6), {"cache_salt": "x"}), ("s2", prompt(6, 6), {"cache_salt": "y"}),
                             ("l1", prompt(6, 6), {"lora_request": SimpleNamespace(lora_name="ad")})):
            task, index = await open_request(dp, ids, rid, **kw)
            tasks.append(task)
            where.append(index)
        assert fakes[where[2]].submitted["s1"]["cache_salt"] == "x"
        for f in fakes:
            f.release.set()
        await asyncio.gather(*tasks)
        return where

    assert asyncio.run(scenario()) == [0, 1, 0, 1, 0]  # always the least loaded: no prefix matched
    assert dp.stats()["num_affinity_routed"] == 0


def test_finished_outputs_extend_the_remembered_prefix():
    """A chat's next turn (prompt + answer + more) finds the replica of the previous turn."""
    dp, fakes = make()

    async def scenario():
        for f in fakes:
            f.release.set()
        first = prompt(1, 1, length=2 * BS - 2)  # 1 full block; with the 2 output tokens, 2
        task, home = await open_request(dp, first, "turn1")
        await task
        await open_request(dp, prompt(3, 3), "other")  # replica 0 is busier now, by one
        fakes[0].release.clear()
        _, index = await open_request(dp, first + [7, 8] + [4] * BS, "turn2")  # 2 of 3 blocks match with the answer
        return home, index

    home, index = asyncio.run(scenario())
    assert home == index == 0


def test_abort_goes_to_the_replica_holding_the_request():
    dp, fakes = make()

    async def scenario():
        _, a = await open_request(dp, prompt(1, 1), "a")
        _, b = await open_request(dp, prompt(2, 2), "b")
        dp.abort("b")
        dp.abort("unknown")
        return a, b

    a, b = asyncio.run(scenario())
    assert (a, b) == (0, 1) and fakes[1].aborted == ["b"] and fakes[0].aborted == []


def test_a_request_id_in_use_is_refused():
    dp, _ = make()

    async def scenario():
        await open_request(dp, prompt(1, 1), "same")
        with pytest.raises(ValueError, match="already in use"):
            await open_request(dp, prompt(2, 2), "same")

    asyncio.run(scenario())


# -- control calls, stats -------------------------------------------------------------------------


def test_control_calls_reach_every_replica_with_one_result():
    dp, fakes = make()

    async def scenario():
        await dp.add_lora("req")
        removed = await dp.remove_lora("ad")
        dropped = await dp.reset_prefix_cache()
        await dp.sleep(2, "wait")
        await dp.wake_up(["weights"])
        await dp.start_profile("/t")
        files = await dp.stop_profile()
        return removed, dropped, files

    removed, dropped, files = asyncio.run(scenario())
    assert removed is True and dropped == 21
    assert files == [Path("/t/r0.json"), Path("/t/r1.json"), Path("/t/shared.json")]
    for f in fakes:
        assert f.calls == [("add_lora", "req"), ("remove_lora", "ad"), ("reset_prefix_cache",), ("sleep", 2, "wait"),
                           ("wake_up", ["weights"]), ("start_profile", "/t"), ("stop_profile",)]
    assert not dp.is_sleeping
    fakes[1].is_sleeping = True
    assert dp.is_sleeping
    dp.shutdown(1.0)
    assert all(f.calls[-1] == ("shutdown",) for f in fakes)


def test_a_failing_control_call_raises_after_every_replica_ran_it():
    dp, fakes = make()
    fakes[0].fail_calls.add("sleep")
    with pytest.raises(ValueError, match="sleep failed on replica 0"):
        asyncio.run(dp.sleep(1, "abort"))
    assert [f.calls for f in fakes] == [[("sleep", 1, "abort")]] * 2


def test_stats_are_summed_with_each_replicas_own():
    dp, _ = make()

    async def scenario():
        await open_request(dp, prompt(1, 1), "a")
        return dp.stats()

    s = asyncio.run(scenario())
    assert s["data_parallel_size"] == 2 and len(s["replicas"]) == 2
    assert s["num_running"] == 3 and s["num_waiting"] == 4 and s["num_prompt_tokens"] == 300
    assert s["kv_cache_usage"] == pytest.approx(0.3) and s["sleep_level"] == 1
    assert s["lora"] == {"max_lora": 2, "running": ["a0", "a1"], "waiting": []}
    assert [(r["num_requests"], r["num_open"], r["num_running"]) for r in s["replicas"]] == [(1, 1, 1), (0, 0, 2)]


# -- failure --------------------------------------------------------------------------------------


def test_one_dying_replica_kills_the_client():
    engines = [FakeEngine(steps=10_000, pause=0.005), FakeEngine(steps=3)]
    dp = DataParallelClient([AsyncEngine(e) for e in engines], block_size=2, slack=4)
    failures: list[BaseException] = []
    dp.on_failure = failures.append

    async def scenario():
        seen = 0
        with pytest.raises(EngineDeadError, match="the forward exploded"):
            async for _ in dp.generate([1, 2], SamplingParams(max_tokens=10_000), "open"):
                seen += 1
                if seen == 3:
                    engines[0].explode.set()
        with pytest.raises(EngineDeadError, match="replica 0 of 2 stopped"):
            async for _ in dp.generate([3, 4], SamplingParams(max_tokens=3), "later"):
                pass

    try:
        assert dp.alive and dp.error is None
        asyncio.run(scenario())
        assert not dp.alive and isinstance(dp.error, EngineDeadError)
        assert len(failures) == 1 and failures[0] is dp.error and "forward exploded" in str(dp.error)
        late: list[BaseException] = []
        dp.on_failure = late.append  # set after the death: called at once
        assert late == [dp.error] and len(failures) == 1
        assert dp.clients[1].alive  # the other replica was not touched
    finally:
        dp.shutdown(2.0)


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_per_replica_and_summed():
    from prometheus_client.parser import text_string_to_metric_families

    from heron.server.metrics import ServerMetrics

    dp, _ = make()

    async def scenario():
        await open_request(dp, prompt(1, 1), "a")
        return ServerMetrics("m", dp.stats, prefixes=("heron", "vllm"), max_model_len=64).render().decode()

    samples: dict[str, list] = {}
    for fam in text_string_to_metric_families(asyncio.run(scenario())):
        for s in fam.samples:
            samples.setdefault(s.name, []).append(s)

    def by_engine(name: str) -> dict[str | None, float]:
        return {s.labels.get("engine"): s.value for s in samples[name]}

    assert by_engine("vllm:num_requests_running") == {"0": 1.0, "1": 2.0}  # vLLM: one series per replica
    assert by_engine("vllm:kv_cache_usage_perc") == {"0": pytest.approx(0.2), "1": pytest.approx(0.4)}
    assert by_engine("heron:num_requests_running") == {None: 3.0}  # heron: the sum, as with one engine
    assert by_engine("heron:kv_cache_usage_perc") == {None: pytest.approx(0.3)}
    assert by_engine("heron:replica_num_requests_running") == {"0": 1.0, "1": 2.0}
    assert by_engine("heron:replica_requests_total") == {"0": 1.0, "1": 0.0}
    assert by_engine("heron:replica_prompt_tokens_total") == {"0": 100.0, "1": 200.0}
    sleep = {(s.labels["engine"], s.labels["sleep_state"]): s.value for s in samples["vllm:engine_sleep_state"]}
    assert sleep[("0", "awake")] == 1.0 and sleep[("1", "weights_offloaded")] == 1.0
    assert "vllm:replica_num_requests_running" not in samples and "vllm:replica_requests_total" not in samples
    assert all(s.labels["engine"] == "0" for s in samples["vllm:request_success_total"])  # front-end series
    assert len(samples["heron:lora_requests_info"]) == len(samples["vllm:lora_requests_info"]) == 1
