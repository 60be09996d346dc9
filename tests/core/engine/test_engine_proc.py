"""``EngineProcClient``: the engine in its own process answers exactly as ``AsyncEngine`` in this one.

A tiny random Llama in fp32 (equal arithmetic, so equal tokens), one engine process for the module
(LoRA enabled, so adapters can be loaded), an in-process ``AsyncEngine`` on the same config as the
reference, and a second engine process that a test kills.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from heron.engine import (
    AsyncEngine,
    EngineConfig,
    LLMEngine,
    SamplingParams,
    StructuredOutputsParams,
)
from heron.engine.errors import EngineDeadError, RequestFailedError, TokenIdError
from heron.engine.proc_client import EngineProcClient
from heron.engine.sleep import EngineSleepingError
from heron.lora import LoRAError, LoRARequest
from heron.structured.params import StructuredOutputError
from heron.testing.models import save_tiny_tokenizer, tiny_checkpoint, tiny_config
from tests.core.lora.conftest import save_adapter

PROMPTS = [[5, 17, 99, 3, 42], [200, 1, 1, 7], [64, 65, 66, 67, 68, 69, 70], [9]]


class ExplodingGate:
    """A reasoning gate (importable, so it pickles) that raises on the request's second token."""

    def is_reasoning_end(self, token_ids: Any) -> bool:
        if len(token_ids) == 2:
            raise KeyError("injected gate failure")
        return False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("engine-proc")
    hf = tiny_checkpoint(tiny_config("llama"), root / "model")
    save_tiny_tokenizer(root / "model")
    save_adapter(hf, root / "adapter", seed=1)
    config = EngineConfig(model=str(root / "model"), dtype="float32", num_kv_blocks=128, max_num_seqs=8,
                          enable_lora=True, max_loras=1, max_lora_rank=8)
    proc = EngineProcClient(config, name="t")
    ref = AsyncEngine(LLMEngine(config))
    yield {"root": root, "config": config, "proc": proc, "ref": ref}
    proc.shutdown()
    ref.shutdown()


async def _collect(client: Any, prompt: list[int], params: SamplingParams, rid: str) -> list[Any]:
    return [out async for out in client.generate(prompt, params, rid)]


def _merged(outs: list[Any]) -> list[tuple]:
    """Per sample: (index, token ids, text, logprob keys, finish reason)."""
    samples: dict[int, list] = {}
    for out in outs:
        for c in out.outputs:
            s = samples.setdefault(c.index, [[], "", [], None])
            s[0] += c.token_ids
            s[1] += c.text
            s[2] += [sorted(d) for d in (c.logprobs or [])]
            s[3] = c.finish_reason or s[3]
    return [(i, *samples[i]) for i in sorted(samples)]


def _run_all(client: Any, params: SamplingParams, tag: str) -> list[list[tuple]]:
    async def scenario():
        return await asyncio.gather(*(_collect(client, p, params, f"{tag}{i}") for i, p in enumerate(PROMPTS)))

    return [_merged(outs) for outs in asyncio.run(scenario())]


def _wait_idle(client: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = client.stats()
        if stats["num_running"] == 0 and stats["num_waiting"] == 0:
            return stats
        time.sleep(0.02)
    pytest.fail(f"the engine did not go idle: {client.stats()}")


def test_greedy_outputs_equal_the_in_process_engine(tiny):
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    got = _run_all(tiny["proc"], params, "g")
    assert got == _run_all(tiny["ref"], params, "g")
    assert all(len(sample[1]) == 24 for sample in (outs[0] for outs in got))
    assert tiny["proc"].stats()["num_generated_tokens"] >= 24 * len(PROMPTS)


def test_n_samples_with_logprobs_equal_the_in_process_engine(tiny):
    params = SamplingParams(n=3, temperature=0.8, seed=7, max_tokens=10, ignore_eos=True, logprobs=2)
    got = _run_all(tiny["proc"], params, "n")
    assert got == _run_all(tiny["ref"], params, "n")
    assert all(len(outs) == 3 and all(len(s[3]) == 10 for s in outs) for outs in got)


def _stop_string(client: Any) -> str:
    """Two characters from the middle of a greedy output of prompt 0 (the tiny model's text is random)."""
    outs = _run_all(client, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True), "probe")
    text = outs[0][0][2]
    assert len(text) >= 12, text
    return text[8:10]


def test_stop_strings_found_by_the_front_end_cut_the_output_as_in_process(tiny):
    """The engine process sends token ids; the front-end detokenizes, cuts each sample at its stop
    string (tokens, text and logprobs), stops those samples in the engine and frees their blocks."""
    stop = _stop_string(tiny["ref"])
    cases = [SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop], logprobs=1),
             SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop],
                            include_stop_str_in_output=True),
             SamplingParams(n=3, temperature=1.0, seed=3, max_tokens=24, ignore_eos=True,
                            stop=[stop, *"abcdefghijklmnop"])]
    for k, params in enumerate(cases):
        async def scenario(client: Any, params: SamplingParams = params, k: int = k) -> list[Any]:
            return await asyncio.gather(*(_collect(client, p, params, f"stop{k}-{i}") for i, p in enumerate(PROMPTS)))

        got, want = asyncio.run(scenario(tiny["proc"])), asyncio.run(scenario(tiny["ref"]))
        for outs_got, outs_want in zip(got, want, strict=True):
            assert _merged(outs_got) == _merged(outs_want)
            reasons = [(c.index, c.finish_reason, c.stop_reason) for o in outs_got for c in o.outputs if c.finish_reason]
            assert sorted(reasons) == sorted((c.index, c.finish_reason, c.stop_reason)
                                             for o in outs_want for c in o.outputs if c.finish_reason)
            assert outs_got[-1].finished
        if params.n > 1:  # some samples end at a stop string while their siblings go on
            ended = [c for outs in got for o in outs for c in o.outputs if c.finish_reason]
            assert any(isinstance(c.stop_reason, str) for c in ended) and any(c.finish_reason == "length" for c in ended)
            continue
        first = _merged(got[0])[0]
        assert first[4] == "stop"  # prompt 0's greedy output holds the stop string
        assert first[2].endswith(stop) if params.include_stop_str_in_output else stop not in first[2]
        assert len(first[1]) < 24 and len(first[3]) in (0, len(first[1]))
    assert _wait_idle(tiny["proc"])["kv_cache_usage"] == 0.0


def test_leaving_a_stream_early_aborts_the_request_and_frees_it(tiny):
    proc = tiny["proc"]

    async def scenario():
        params = SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True)
        async for out in proc.generate([1, 2, 3], params, "leave"):
            assert not out.finished
            break  # closes the generator: the client aborts the request

    asyncio.run(scenario())
    stats = _wait_idle(proc)
    assert stats["kv_cache_usage"] == 0.0


def test_errors_cross_as_the_same_classes(tiny):
    proc = tiny["proc"]

    async def scenario():
        with pytest.raises(TokenIdError) as bad:
            await _collect(proc, [1, 300], SamplingParams(max_tokens=2), "bad-ids")
        assert bad.value.param == "prompt_token_ids" and bad.value.token_id == 300
        assert str(bad.value).startswith("prompt_token_ids contains 300, which is out of vocabulary")
        with pytest.raises(StructuredOutputError):
            await proc.compile_grammar(StructuredOutputsParams(json="{\"type\": 12}"))
        with pytest.raises(LoRAError):
            await proc.add_lora(LoRARequest("missing", 5, str(tiny["root"] / "no-such-dir")))
        params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
        slow = asyncio.ensure_future(_collect(proc, [4, 5], params, "dup"))
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="already in use"):
            await _collect(proc, [4, 5], params, "dup")
        await slow

    asyncio.run(scenario())


def test_a_failing_request_fails_alone(tiny):
    proc = tiny["proc"]
    good = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    bad = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, reasoning_gate=ExplodingGate,
                         structured_outputs=StructuredOutputsParams(regex="[a-z]{1,30}"))

    async def scenario():
        return await asyncio.gather(_collect(proc, PROMPTS[0], good, "ok"), _collect(proc, PROMPTS[1], bad, "boom"),
                                    return_exceptions=True)

    ok, boom = asyncio.run(scenario())
    assert isinstance(boom, RequestFailedError) and "injected gate failure" in str(boom)
    want = asyncio.run(_collect(tiny["ref"], PROMPTS[0], good, "ok"))
    assert _merged(ok) == _merged(want)
    assert proc.alive


def test_control_calls(tiny):
    proc, root = tiny["proc"], tiny["root"]
    greedy = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)

    async def scenario():
        assert await proc.reset_prefix_cache() >= 0
        await proc.add_lora(LoRARequest("ad", 1, str(root / "adapter")))
        assert [r.lora_name for r in proc.list_loras()] == ["ad"]
        tuned = [out async for out in proc.generate(PROMPTS[2], greedy, "lora", lora_request=proc.list_loras()[0])]
        assert await proc.remove_lora("ad") is True and proc.list_loras() == []
        assert await proc.remove_lora("ad") is False
        await proc.sleep(1)
        assert proc.is_sleeping and proc.engine.sleep_state.kv_released
        with pytest.raises(EngineSleepingError):
            await _collect(proc, PROMPTS[0], greedy, "asleep")
        with pytest.raises(ValueError, match="Sleep level"):
            await proc.sleep(3)
        await proc.wake_up()
        assert not proc.is_sleeping
        await proc.start_profile(root / "traces")
        plain = await _collect(proc, PROMPTS[2], greedy, "plain")
        files = await proc.stop_profile()
        assert files and all(Path(f).exists() for f in files)
        with pytest.raises(ValueError, match="not running"):
            await proc.stop_profile()
        return tuned, plain

    tuned, plain = asyncio.run(scenario())
    assert _merged(tuned) != _merged(plain)  # the adapter changed the output


def test_killing_the_engine_process_ends_every_stream(tiny):
    failures: list[BaseException] = []
    client = EngineProcClient(tiny["config"], name="doomed", on_failure=failures.append)

    async def scenario():
        params = SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True)
        streams = [asyncio.ensure_future(_collect(client, [1, 2], params, f"k{i}")) for i in range(3)]
        await asyncio.sleep(0)  # submitted
        await client.sleep(1, "keep")  # paused, their streams open
        assert client.stats()["num_waiting"] == 3
        os.kill(client.pid, signal.SIGKILL)
        return await asyncio.gather(*streams, return_exceptions=True)

    try:
        results = asyncio.run(scenario())
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(isinstance(r, EngineDeadError) for r in results), results
        assert len(failures) == 1 and isinstance(failures[0], EngineDeadError)
        assert "signal 9" in str(failures[0]) and not client.alive
        with pytest.raises(EngineDeadError):
            asyncio.run(_collect(client, [1], SamplingParams(max_tokens=1), "late"))
        late: list[BaseException] = []
        client.on_failure = late.append  # a callback set after the death hears of it at once
        assert len(late) == 1
    finally:
        client.shutdown()
