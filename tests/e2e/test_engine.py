"""The engine on the real model: stopping, logprobs, seeds, prefix-cache reporting, aborts, no leaks,
and ``heron serve`` exiting non-zero when the engine cannot start."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from heron import SamplingParams
from heron.engine import AsyncEngine
from heron.engine.block_manager import BlockManager
from heron.engine.outputs import merge_output

pytestmark = pytest.mark.slow


def _one(llm, prompt_ids, **params):
    return llm.generate([{"prompt_token_ids": prompt_ids}], SamplingParams(**params), use_tqdm=False)[0]


def test_stop_strings_cut_the_text(llm32, chat_prompts):
    free = _one(llm32, chat_prompts[1], temperature=0, max_tokens=40).outputs[0]
    stop = free.text[12:16]
    assert len(stop.strip()) >= 2
    cut = _one(llm32, chat_prompts[1], temperature=0, max_tokens=40, stop=[stop]).outputs[0]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert cut.text == free.text[: free.text.index(stop)]
    kept = _one(llm32, chat_prompts[1], temperature=0, max_tokens=40, stop=[stop],
                include_stop_str_in_output=True).outputs[0]
    assert kept.text == free.text[: free.text.index(stop) + len(stop)]


def test_stop_token_ids_and_length(llm32, chat_prompts):
    free = _one(llm32, chat_prompts[2], temperature=0, max_tokens=12, ignore_eos=True).outputs[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 12
    target = free.token_ids[5]
    first = free.token_ids.index(target)
    out = _one(llm32, chat_prompts[2], temperature=0, max_tokens=12, stop_token_ids=[target]).outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == target
    assert out.token_ids == free.token_ids[: first + 1]


def test_min_tokens_holds_back_eos(llm32, chat_prompts):
    short = _one(llm32, chat_prompts[0], temperature=0, max_tokens=64).outputs[0]
    assert short.finish_reason == "stop" and len(short.token_ids) < 20
    longer = _one(llm32, chat_prompts[0], temperature=0, max_tokens=64, min_tokens=25).outputs[0]
    assert len(longer.token_ids) >= 25


def test_logprobs_and_prompt_logprobs(llm32, chat_prompts):
    ids = chat_prompts[0]
    out = _one(llm32, ids, temperature=0, max_tokens=6, logprobs=3, prompt_logprobs=2)
    comp = out.outputs[0]
    assert len(comp.logprobs) == len(comp.token_ids)
    for tid, lp in zip(comp.token_ids, comp.logprobs, strict=True):
        assert lp[tid].rank == 1 and lp[tid].logprob <= 0  # greedy picks the top token
        assert len(lp) == 3
        assert sorted(v.rank for v in lp.values()) == [1, 2, 3]
    assert comp.cumulative_logprob == pytest.approx(sum(lp[t].logprob for t, lp in zip(comp.token_ids, comp.logprobs, strict=True)))
    assert len(out.prompt_logprobs) == len(ids) and out.prompt_logprobs[0] is None
    for pos, entry in enumerate(out.prompt_logprobs[1:], start=1):
        assert ids[pos] in entry and 2 <= len(entry) <= 3


def test_seeded_sampling_does_not_depend_on_the_batch(llm32, chat_prompts):
    params = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=1234, max_tokens=24, ignore_eos=True)
    alone = llm32.generate([{"prompt_token_ids": chat_prompts[3]}], params, use_tqdm=False)[0]
    # a batch of 16: fifteen unseeded neighbours of various lengths around the seeded request
    prompts = [chat_prompts[i % 8][: 20 + 3 * i] for i in range(15)]
    others = [SamplingParams(temperature=1.0, max_tokens=10 + i, seed=None) for i in range(15)]
    batch = llm32.generate([{"prompt_token_ids": p} for p in prompts[:7]] + [{"prompt_token_ids": chat_prompts[3]}]
                           + [{"prompt_token_ids": p} for p in prompts[7:]],
                           others[:7] + [params] + others[7:], use_tqdm=False)
    assert batch[7].outputs[0].token_ids == alone.outputs[0].token_ids
    again = llm32.generate([{"prompt_token_ids": chat_prompts[3]}], params, use_tqdm=False)[0]
    assert again.outputs[0].token_ids == alone.outputs[0].token_ids


def test_n_samples_share_prompt_blocks_and_prefix_cache_reporting(llm32):
    engine = llm32.engine
    prompt = list(range(3000, 3045))  # never seen before: nothing cached
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True)
    req = engine.add_request("n3", None, params, prompt_token_ids=prompt)
    outs = list(engine.step())  # sample 0 computes the prompt; the siblings join on its blocks
    first, *siblings = req.seqs
    assert len(outs) == 1 and all(s.block_table for s in req.seqs)
    for sib in siblings:  # the full prompt blocks are sample 0's own, not copies
        assert sib.block_table[:2] == first.block_table[:2]
        assert sib.num_cached_tokens == 32
    while engine.has_unfinished():
        outs += engine.step()
    out = outs[0]  # the outputs are deltas: merge them into the cumulative result
    for delta in outs[1:]:
        merge_output(out, delta)
    assert out.finished and [c.index for c in out.outputs] == [0, 1, 2]
    assert [len(c.token_ids) for c in out.outputs] == [8, 8, 8]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    assert out.num_cached_tokens == 0  # sample 0 computed the prompt
    hits = engine.blocks.prefix_hits
    again = llm32.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0]
    assert again.num_cached_tokens == 32  # the prompt's full blocks came from the prefix cache
    assert engine.blocks.prefix_hits == hits + 32
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]  # seeded


def test_bf16_greedy_answers_do_not_move_with_prefix_hits_or_chunked_prefill(chat_prompts):
    """On the default kernels (bf16, gguf linears, cpu_paged attention) a prompt's rows are the same
    bits computed whole, as the remainder after a prefix-cache hit, or in prefill chunks; so greedy
    answers repeat exactly. (torch_sdpa's whole-prompt attention and a cached remainder's differ.)"""
    from heron import LLM

    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [{"prompt_token_ids": p} for p in chat_prompts[:4]]
    llm = LLM(max_num_seqs=4, num_kv_blocks=256)
    assert llm.engine.dtype == torch.bfloat16
    cold = llm.generate(prompts, params, use_tqdm=False)
    assert [o.num_cached_tokens for o in cold] == [0] * len(prompts)
    for p in prompts:  # one at a time, each on its cached blocks
        again = llm.generate([p], params, use_tqdm=False)[0]
        assert again.num_cached_tokens > 0
        assert again.outputs[0].token_ids == cold[prompts.index(p)].outputs[0].token_ids
    del llm
    # each prompt alone in 7-token chunks (a chunk sharing its step with other requests' decodes would
    # put those decodes on the gguf kernel's tile unit, a batch-shape effect like any batched GEMM's)
    chunked = LLM(max_num_seqs=4, num_kv_blocks=256, max_num_batched_tokens=7, enable_prefix_caching=False)
    for p, want in zip(prompts, cold, strict=True):
        got = chunked.generate([p], params, use_tqdm=False)[0]
        assert got.outputs[0].token_ids == want.outputs[0].token_ids


def test_bad_requests_are_refused(llm32):
    engine = llm32.engine
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("e1", None, SamplingParams(), prompt_token_ids=[])
    with pytest.raises(ValueError, match="prompt_token_ids contains"):
        engine.add_request("e2", None, SamplingParams(), prompt_token_ids=[engine.vocab_size + 5])
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add_request("e3", None, SamplingParams(), prompt_token_ids=[1] * engine.max_model_len)
    assert not engine.has_unfinished()


def test_three_hundred_requests_with_aborts_and_preemption_leak_nothing(llm32, chat_prompts):
    engine = llm32.engine
    saved = (engine.blocks, engine.scheduler.blocks)
    blocks = BlockManager(32, engine.blocks.block_size)  # small pool: preemption happens
    engine.blocks = engine.scheduler.blocks = blocks
    rng = random.Random(0)
    preempted_before = engine.scheduler.num_preemptions
    try:
        pending = {}
        finished = {}
        partial = {}
        aborted = set()

        def collect(outs):
            for out in outs:
                merged = partial.pop(out.request_id, None)
                out = out if merged is None else merge_output(merged, out)
                (finished if out.finished else partial)[out.request_id] = out

        # six long requests outgrow the pool together: preemption is certain
        for i in range(6):
            params = SamplingParams(temperature=0.8, max_tokens=60, ignore_eos=True, seed=i)
            engine.add_request(f"long-{i}", None, params, prompt_token_ids=chat_prompts[i][:40])
            pending[f"long-{i}"] = params
        for i in range(294):
            ids = rng.choice(chat_prompts)[: rng.randint(4, 40)]
            params = SamplingParams(
                n=rng.choice([1, 1, 2]), temperature=rng.choice([0.0, 0.7, 1.0]), max_tokens=rng.randint(1, 12),
                stop=rng.choice([None, ["\n"], [" the"]]), logprobs=rng.choice([None, 2]), seed=rng.choice([None, i]),
            )
            rid = f"leak-{i}"
            engine.add_request(rid, None, params, prompt_token_ids=ids, priority=rng.randint(0, 2))
            pending[rid] = params
            if i % 10 == 9:  # let the engine run a few steps between arrivals, aborting some
                for _ in range(3):
                    collect(engine.step())
                victim = rng.choice(sorted(k for k in set(pending) - set(finished) - aborted if k.startswith("leak")))
                engine.abort(victim)
                aborted.add(victim)
        while engine.has_unfinished():
            collect(engine.step())
        assert set(finished) | aborted == set(pending)
        for rid, out in finished.items():
            params = pending[rid]
            assert len(out.outputs) == params.n
            for comp in out.outputs:
                assert comp.finish_reason in ("stop", "length")
                assert 1 <= len(comp.token_ids) <= params.max_tokens
                if comp.finish_reason == "length":
                    assert len(comp.token_ids) == params.max_tokens
        assert engine.scheduler.num_preemptions > preempted_before
        assert not engine.requests and not engine.scheduler.running and not len(engine.scheduler.waiting)
        blocks.check_no_leaks()
    finally:
        engine.blocks, engine.scheduler.blocks = saved


def test_async_engine_streams_aborts_and_survives_bad_requests(llm32, chat_prompts):
    client = AsyncEngine(llm32.engine)

    async def scenario():
        params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
        seen = []
        async for out in client.generate(chat_prompts[0], params, "a1"):
            seen.append(len(out.outputs[0].token_ids))  # deltas: new tokens only
        assert sum(seen) == 20 and all(n >= 1 for n in seen)
        # a client that walks away mid-stream: the request is aborted and its blocks freed
        agen = client.generate(chat_prompts[1], SamplingParams(max_tokens=200, ignore_eos=True), "a2")
        async for _out in agen:
            break
        await agen.aclose()
        with pytest.raises(ValueError, match="prompt_token_ids contains 1000000000"):
            async for _ in client.generate([10**9], params, "a3"):
                pass
        # the engine is still alive after a bad request
        outs = await asyncio.gather(*[_last(client.generate(p, params, f"c{i}")) for i, p in enumerate(chat_prompts)])
        assert all(len(o.outputs[0].token_ids) == 20 for o in outs)

    try:
        asyncio.run(scenario())
        for _ in range(100):  # the abort is applied by the engine thread
            if not llm32.engine.has_unfinished():
                break
            asyncio.run(asyncio.sleep(0.05))
        assert client.error is None and not llm32.engine.has_unfinished()
    finally:
        client.shutdown()
    llm32.engine.blocks.check_no_leaks()


async def _last(agen):
    """The stream's deltas merged into one cumulative output."""
    merged = None
    async for out in agen:
        merged = out if merged is None else merge_output(merged, out)
    return merged


def test_serve_exits_non_zero_when_the_engine_cannot_start(tmp_path):
    import time

    import httpx

    from tests.e2e.conftest import have_default_model
    from tests.e2e.server_fixture import START_TIMEOUT_S, ServerProcess

    have_default_model()
    server = ServerProcess(["--max-model-len", "100000"], tmp_path / "serve.log")  # the model has 8k
    health = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while server.proc.poll() is None and time.monotonic() < deadline:
            try:
                r = httpx.get(f"{server.base_url}/health", timeout=2)
                health.append((r.status_code, r.json().get("reason", "")))
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        code = server.proc.poll()
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert code == 1, f"heron serve did not exit with status 1 (got {code}); log:\n{log[-4000:]}"
    assert "max_model_len 100000 exceeds the model's context length" in log
    assert "heron serve: the engine failed to start: ValueError" in log
    assert any(status == 503 and "engine failed to start" in reason and "100000" in reason
               for status, reason in health), health[-5:]
