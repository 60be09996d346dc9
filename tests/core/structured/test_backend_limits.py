"""GrammarBackend with its limits: over-limit constraints are refused before compiling,
constraints at the limits compile in bounded time, a slow compile times out for its request
without holding up other compiles."""

from __future__ import annotations

import asyncio
import json
import random
import string
import threading
import time

import pytest

from heron.structured import (
    GrammarBackend,
    StructuredLimits,
    StructuredOutputError,
    StructuredOutputsParams,
)

pytestmark = pytest.mark.slow


def make_backend(checkpoint, **limits) -> GrammarBackend:
    return GrammarBackend(checkpoint.tokenizer, checkpoint.hf_config.vocab_size,
                          stop_token_ids=checkpoint.eos_token_ids, limits=StructuredLimits(**limits))


@pytest.fixture(scope="module")
def backend(checkpoint) -> GrammarBackend:
    return make_backend(checkpoint)


def words(n: int, size: int, seed: int) -> list[str]:
    """``n`` distinct random strings: the costliest literals for xgrammar (no shared prefixes)."""
    rnd = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rnd.choice(string.ascii_letters) for _ in range(size)))
    return sorted(out)


def test_the_200k_enum_is_refused_before_compiling(backend):
    params = StructuredOutputsParams(json={"type": "string", "enum": [f"v{i}" for i in range(200_000)]})
    start = time.perf_counter()
    with pytest.raises(StructuredOutputError, match="max_schema_bytes|max_enum_values"):
        backend.compile(params)
    with pytest.raises(StructuredOutputError, match="max_schema_bytes|max_enum_values"):
        backend.compile_async(params).result(timeout=1)
    assert time.perf_counter() - start < 1.0


AT_THE_LIMITS = {
    # optional properties are the slowest kind measured (quadratic, and an anyOf unites them)
    "optional_properties": lambda: {"anyOf": [
        {"type": "object", "properties": {w: {"type": "array", "items": {}} for w in words(32, 16, 10 + i)}}
        for i in range(32)]},
    "required_properties": lambda: {"type": "object", "properties": {w: {"type": "integer"} for w in words(2048, 16, 1)},
                                    "required": words(2048, 16, 1)},
    "enum": lambda: {"type": "string", "enum": words(4096, 8, 2)},
    "choice": lambda: words(4096, 8, 3),
    "regex": lambda: "(" + "|".join(words(16 * 1024 // 64, 62, 4)) + ")",
    "grammar": lambda: "root ::= " + " | ".join(json.dumps(w) for w in words(32 * 1024 // 64, 58, 5)),
}


@pytest.mark.parametrize("kind", list(AT_THE_LIMITS))
def test_constraints_at_the_limits_compile_in_bounded_time(checkpoint, kind):
    backend = make_backend(checkpoint, compile_timeout_s=60.0)
    value = AT_THE_LIMITS[kind]()
    params = StructuredOutputsParams(**{"json" if kind.endswith("properties") or kind == "enum" else kind: value})
    backend.limits.check(params)  # really within the limits
    start = time.perf_counter()
    compiled = backend.compile(params)
    elapsed = time.perf_counter() - start
    assert backend.new_matcher(compiled) is not None
    # about 5 s at most on a 2-core CPU; the default compile timeout (10 s) is the backstop
    assert elapsed < StructuredLimits().compile_timeout_s, f"{kind} took {elapsed:.1f} s"


def test_a_slow_compile_times_out_for_its_request_then_is_cached(checkpoint):
    backend = make_backend(checkpoint, compile_timeout_s=0.05, max_object_optional_properties=4096)
    params = StructuredOutputsParams(json={"type": "object", "properties": {w: {} for w in words(256, 16, 6)}})
    with pytest.raises(StructuredOutputError, match=r"compile timeout \(0.05 s, compile_timeout_s\)") as err:
        backend.compile(params)
    assert err.value.param == "structured_outputs"
    backend.compile_async(params).result(timeout=60)  # the compile went on in the pool
    start = time.perf_counter()
    backend.compile(params)
    assert time.perf_counter() - start < 0.05


def test_a_slow_compile_does_not_hold_up_others(checkpoint):
    backend = make_backend(checkpoint, max_object_optional_properties=4096)  # a slow one (about 2 s) is allowed
    slow = StructuredOutputsParams(json={"type": "object", "properties": {w: {"type": "string"} for w in words(512, 16, 7)}})
    slow_done = threading.Event()

    def compile_slow() -> None:
        backend.compile(slow)
        slow_done.set()

    thread = threading.Thread(target=compile_slow)
    thread.start()
    time.sleep(0.2)  # the slow one is running
    fast = [StructuredOutputsParams(json={"type": "object", "properties": {f"k{i}": {"type": "integer"}}})
            for i in range(3)]
    start = time.perf_counter()
    for params in fast:
        backend.compile(params)
    elapsed = time.perf_counter() - start
    still_running = not slow_done.is_set()
    thread.join()
    assert still_running, "the slow compile finished too soon to show anything"
    assert elapsed < 0.5, f"small compiles waited {elapsed:.2f} s behind a slow one"


def test_ordinary_constraints_still_compile(backend):
    for params in (StructuredOutputsParams(json={"type": "object", "properties": {"a": {"type": "integer"}}}),
                   StructuredOutputsParams(regex=r"\d{3}-\d{4}"),
                   StructuredOutputsParams(choice=["yes", "no"]),
                   StructuredOutputsParams(grammar='root ::= "a" | "b"'),
                   StructuredOutputsParams(json_object=True)):
        assert backend.new_matcher(backend.compile(params)) is not None


def test_acompile_leaves_the_event_loop_free(checkpoint):
    backend = make_backend(checkpoint, max_object_optional_properties=4096, compile_timeout_s=0.05)
    slow = StructuredOutputsParams(json={"type": "object", "properties": {w: {"type": "string"} for w in words(512, 16, 8)}})

    async def main() -> tuple[float, str]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        try:
            await backend.acompile(slow)
            message = ""
        except StructuredOutputError as err:
            message = str(err)
        small = await backend.acompile(StructuredOutputsParams(regex="[a-z]+"))
        assert backend.new_matcher(small) is not None
        done.set()
        await task
        return max(gaps), message

    worst_gap, message = asyncio.run(main())
    assert "compile_timeout_s" in message  # the slow one takes far longer than 0.05 s (~1-2 s)
    assert worst_gap < 0.25, f"the event loop stalled {worst_gap:.2f} s"
