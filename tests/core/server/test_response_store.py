"""The response-store plugin point: the StoredResponse record, the built-in bounded memory store, and
third-party stores loaded by name (registered in-process, installed as an entry point, the docs example)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from heron.interfaces import ResponseStore, StoredResponse
from heron.plugins import PluginLoadError, registry
from heron.server.settings import ServerSettings

DOCS = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"


def record(rid: str = "resp_1", text: str = "hello", created_at: float = 100.0) -> StoredResponse:
    return StoredResponse(
        id=rid,
        response={"id": rid, "object": "response", "status": "completed",
                  "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]},
        input_items=[{"id": "msg_in", "type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                      "text": "hi"}]}],
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}],
        created_at=created_at,
    )


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(clock: Clock | None = None, **limits):
    cls = registry("response_stores").load("memory")
    settings = ServerSettings(**{f"response_store_max_{k}": v for k, v in limits.items()})
    return cls(settings, clock=clock or Clock())


def run(coro):
    return asyncio.run(coro)


# -- the record -------------------------------------------------------------------------------------

def test_record_round_trips_through_compact_json():
    rec = record(text="naïve ☃")
    text = rec.to_json()
    assert " " not in text.replace("naïve ☃", "")  # compact separators
    assert "☃" in text  # UTF-8 kept, not \u-escaped
    assert set(json.loads(text)) == {"id", "response", "input_items", "messages", "created_at"}
    back = StoredResponse.from_json(text)
    assert back == rec and back is not rec
    assert back.response is not rec.response
    assert rec.size() == len(text.encode("utf-8")) > len(text)  # the snowman is 3 bytes


def test_from_json_refuses_what_is_not_a_record():
    with pytest.raises(ValueError, match="not a stored response"):
        StoredResponse.from_json('{"id": "resp_1"}')
    with pytest.raises(ValueError, match="not a stored response"):
        StoredResponse.from_json("[1, 2]")


def test_interfaces_export_the_contract():
    import heron.interfaces as interfaces

    assert {"ResponseStore", "StoredResponse"} <= set(interfaces.__all__)
    with pytest.raises(TypeError):
        ResponseStore(ServerSettings())  # abstract


# -- the memory store -------------------------------------------------------------------------------

def test_memory_store_loads_by_name_and_passes_the_interface_check():
    cls = registry("response_stores").load("memory")
    assert issubclass(cls, ResponseStore) and cls.__name__ == "MemoryResponseStore"
    assert registry("response_stores").check(cls) is None
    assert "memory" not in registry("response_stores").errors()
    assert registry("response_stores").is_builtin("memory")
    store = cls(ServerSettings())  # the real constructor, default clock and settings
    assert (store.max_entries, store.max_bytes, store.max_age) == (1000, 64 * 1024 * 1024, 86400.0)


def test_put_get_delete():
    store = make_store()

    async def scenario():
        assert await store.get("resp_1") is None
        await store.put(record("resp_1"))
        await store.put(record("resp_2", "second"))
        got = await store.get("resp_1")
        assert got == record("resp_1")
        assert (await store.get("resp_2")).messages[-1]["content"] == "second"
        assert await store.delete("resp_1") is True
        assert await store.delete("resp_1") is False
        assert await store.delete("resp_unknown") is False
        assert await store.get("resp_1") is None
        assert len(store) == 1 and store.total_bytes == record("resp_2", "second").size()
        await store.close()
        assert len(store) == 0 and store.total_bytes == 0

    run(scenario())


def test_replacing_an_id_keeps_one_entry_and_updates_bytes():
    store = make_store()
    small, big = record("resp_1", "a"), record("resp_1", "a much longer answer than before")

    async def scenario():
        await store.put(small)
        assert store.total_bytes == small.size()
        await store.put(big)
        assert len(store) == 1
        assert store.total_bytes == big.size()
        assert (await store.get("resp_1")) == big

    run(scenario())


def test_entries_limit_evicts_the_oldest_put():
    store = make_store(entries=3)

    async def scenario():
        for i in range(3):
            await store.put(record(f"resp_{i}"))
        await store.put(record("resp_0", "again"))  # a re-put makes resp_0 the youngest
        await store.put(record("resp_3"))
        assert len(store) == 3
        assert await store.get("resp_1") is None  # the oldest put went first
        for rid in ("resp_0", "resp_2", "resp_3"):
            assert await store.get(rid) is not None, rid
        held = [await store.get(r) for r in ("resp_0", "resp_2", "resp_3")]
        assert store.total_bytes == sum(r.size() for r in held)

    run(scenario())


def test_bytes_limit_evicts_the_oldest_until_it_fits():
    one = record("resp_0").size()
    store = make_store(bytes=3 * one + one // 2)  # room for three records, not four

    async def scenario():
        for i in range(3):
            await store.put(record(f"resp_{i}"))
        assert len(store) == 3
        await store.put(record("resp_3"))
        assert [await store.get(f"resp_{i}") is None for i in range(4)] == [True, False, False, False]
        assert store.total_bytes == 3 * one <= store.max_bytes
        bigger = record("resp_4", "x" * (5 + one // 2))  # the text is in response and messages: ~2 records
        assert 1.5 * one < bigger.size() <= 2.5 * one  # so it evicts resp_1 and resp_2, not resp_3
        await store.put(bigger)
        assert [await store.get(f"resp_{i}") is None for i in range(5)] == [True, True, True, False, False]
        assert store.total_bytes == one + bigger.size() <= store.max_bytes

    run(scenario())


def test_a_record_larger_than_max_bytes_is_not_stored(caplog):
    store = make_store(bytes=record().size() + 50)

    async def scenario():
        await store.put(record("resp_keep"))
        await store.put(record("resp_huge", "x" * 1000))
        assert await store.get("resp_huge") is None
        assert await store.get("resp_keep") is not None  # nothing evicted for a record that cannot fit
        assert len(store) == 1 and store.total_bytes == record("resp_keep").size()
        await store.put(record("resp_keep", "y" * 1000))  # replacing with an oversize record drops the old
        assert await store.get("resp_keep") is None
        assert len(store) == 0 and store.total_bytes == 0

    with caplog.at_level("WARNING"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "resp_huge" in warnings[0] and "--response-store-max-bytes" in warnings[0]


def test_records_expire_after_max_age_since_their_put():
    clock = Clock(1000.0)
    store = make_store(clock, age=60.0)

    async def scenario():
        await store.put(record("resp_old", created_at=0.0))  # age counts from the put, not created_at
        clock.now = 1030.0
        await store.put(record("resp_new"))
        clock.now = 1060.0
        assert await store.get("resp_old") is not None  # exactly max_age old: still there
        clock.now = 1061.0
        assert await store.get("resp_old") is None
        assert len(store) == 1  # dropped lazily by that get
        assert await store.get("resp_new") is not None
        clock.now = 1100.0
        assert await store.delete("resp_new") is False  # expired counts as gone
        assert len(store) == 0 and store.total_bytes == 0

    run(scenario())


def test_expired_records_are_dropped_by_a_later_put():
    clock = Clock(0.0)
    store = make_store(clock, age=10.0)

    async def scenario():
        for i in range(5):
            await store.put(record(f"resp_{i}"))
        clock.now = 20.0
        await store.put(record("resp_fresh"))
        assert len(store) == 1 and store.total_bytes == record("resp_fresh").size()

    run(scenario())


def test_get_never_aliases_what_put_received_or_an_earlier_get():
    store = make_store()
    original = record("resp_1")

    async def scenario():
        await store.put(original)
        original.response["status"] = "changed after put"
        original.messages.append({"role": "user", "content": "sneaky"})
        first = await store.get("resp_1")
        assert first.response["status"] == "completed" and len(first.messages) == 2
        first.response["output"][0]["content"][0]["text"] = "mutated"
        first.input_items.clear()
        second = await store.get("resp_1")
        assert second == record("resp_1")
        assert second.response is not first.response

    run(scenario())


def test_concurrent_use_keeps_the_bounds_and_the_byte_count():
    store = make_store(entries=20)

    async def worker(n: int) -> None:
        for i in range(30):
            rid = f"resp_{(n * 7 + i) % 40}"
            await store.put(record(rid, "z" * (i % 5)))
            await asyncio.sleep(0)
            got = await store.get(rid)
            assert got is None or got.id == rid
            if i % 4 == 0:
                await store.delete(f"resp_{(n + i) % 40}")

    async def scenario():
        await asyncio.gather(*(worker(n) for n in range(8)))
        assert len(store) <= 20
        held = [await store.get(f"resp_{i}") for i in range(40)]
        assert store.total_bytes == sum(r.size() for r in held if r is not None)

    run(scenario())


@pytest.mark.parametrize("limit", ["entries", "bytes", "age"])
def test_non_positive_limits_are_refused(limit):
    with pytest.raises(ValueError, match=f"--response-store-max-{limit} must be positive"):
        make_store(**{limit: 0})


# -- third-party stores ---------------------------------------------------------------------------

class _DictStore(ResponseStore):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.texts: dict[str, str] = {}

    async def put(self, record: StoredResponse) -> None:
        self.texts[record.id] = record.to_json()

    async def get(self, response_id: str) -> StoredResponse | None:
        text = self.texts.get(response_id)
        return None if text is None else StoredResponse.from_json(text)

    async def delete(self, response_id: str) -> bool:
        return self.texts.pop(response_id, None) is not None


def test_a_registered_third_party_store_loads_by_name():
    reg = registry("response_stores")
    undo = reg.register("dict_store", _DictStore)
    try:
        assert "dict_store" in reg.names()
        assert reg.origin("dict_store") == "registered in-process"
        cls = reg.load("dict_store")
        assert cls is _DictStore
        store = cls(ServerSettings())

        async def scenario():
            await store.put(record("resp_9"))
            assert await store.get("resp_9") == record("resp_9")
            assert await store.delete("resp_9") is True
            await store.close()  # the default close is a no-op coroutine

        run(scenario())
    finally:
        undo()
    assert "dict_store" not in reg.names()


def test_registering_a_non_store_is_refused():
    class Incomplete(ResponseStore):
        async def put(self, record):
            return None

    with pytest.raises(TypeError, match="leaves abstract methods unimplemented: delete, get"):
        registry("response_stores").register("incomplete", Incomplete)
    with pytest.raises(TypeError, match="not a subclass"):
        registry("response_stores").register("dict", dict)


def _docs_example() -> str:
    section = DOCS.read_text().split("## 7. Response stores", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_example_store_installs_and_round_trips(fake_dist, tmp_path, monkeypatch):
    fake_dist("heron-fake-files", {"heron.response_stores": {"fake_files": "heron_fake_files:FileResponseStore"}},
              {"heron_fake_files": _docs_example()})
    monkeypatch.setenv("HERON_RESPONSE_DIR", str(tmp_path / "responses"))
    reg = registry("response_stores")
    assert "fake_files" in reg.names()
    cls = reg.load("fake_files")
    assert issubclass(cls, ResponseStore)
    assert reg.origin("fake_files") == "heron-fake-files 0.0.1"
    store = cls(ServerSettings())

    async def scenario():
        await asyncio.gather(*(store.put(record(f"resp_{i}", str(i))) for i in range(5)))
        await store.put(record("resp_2", "replaced"))
        assert (await store.get("resp_2")).messages[-1]["content"] == "replaced"
        assert await store.get("../etc/passwd") is None
        assert await store.delete("resp_0") is True and await store.get("resp_0") is None
        assert await store.delete("resp_0") is False

    run(scenario())
    assert sorted(p.name for p in (tmp_path / "responses").iterdir()) == [f"resp_{i}.json" for i in range(1, 5)]
    restarted = cls(ServerSettings())  # a new server process finds them again
    assert run(restarted.get("resp_4")) == record("resp_4", "4")


def test_a_broken_installed_store_fails_its_interface_check(fake_dist):
    fake_dist("heron-fake-notstore", {"heron.response_stores": {"fake_notstore": "heron_fake_notstore:Store"}},
              {"heron_fake_notstore": "class Store:\n    pass\n"})
    with pytest.raises(PluginLoadError, match="not a subclass of heron.interfaces.response_store.ResponseStore"):
        registry("response_stores").load("fake_notstore")


def test_serve_refuses_an_unknown_store_or_bad_limits_at_start():
    from heron.cli.serve_cmd import check_plugins  # what `heron serve` runs before starting
    from heron.server.settings import ServerSettings

    assert check_plugins(ServerSettings()) == []
    [unknown] = check_plugins(ServerSettings(response_store="memroy"))
    assert "Did you mean 'memory'?" in unknown
    [bad] = check_plugins(ServerSettings(response_store_max_entries=0))
    assert "--response-store-max-entries" in bad
