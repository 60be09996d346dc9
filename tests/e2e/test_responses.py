"""``/v1/responses`` through the official openai SDK against real ``heron serve`` processes.

Two servers start together: the default model (SmolLM2, prefix caching on) for text, streaming,
structured output, stored responses, continuation, background runs and errors; and the replay
model plugin (:mod:`tests.e2e.responses_replay`, Hermes tool calls and Qwen3 thinking, a store of
two entries) for the function-call round trip, reasoning items and the store's limits. Every
answer either client reads passes through :class:`~tests.e2e.responses_wire.RecordingTransport`
and is validated, after each test, against OpenAI's published schemas (tests/openai_schemas).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.e2e import responses_replay as rp
from tests.e2e.conftest import have_default_model
from tests.e2e.responses_wire import RecordingTransport, WireLog, parse_sse
from tests.e2e.server_fixture import ServerProcess, _LogOnFailure, wait_until

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
QUESTION = "What is the capital of France?"
GREEDY = {"max_output_tokens": 32, "temperature": 0}
REPO = Path(__file__).resolve().parents[2]
REPLAY_FLAGS = ("--no-enable-prefix-caching", "--kv-cache-memory-bytes", "1MiB", "--dtype", "float32",
                "--max-num-seqs", "4", "--served-model-name", rp.SERVED, "--response-store-max-entries", "2")


# -- servers and clients ------------------------------------------------------------------------


class _Fleet:
    def __init__(self, default: ServerProcess, replay: ServerProcess, checkpoint) -> None:
        self.default, self.replay, self.checkpoint = default, replay, checkpoint


@pytest.fixture(scope="module")
def fleet(request, tmp_path_factory):
    """Starts both servers at once (start-up is mostly imports) and stops them after the module."""
    have_default_model()
    root = tmp_path_factory.mktemp("responses")
    checkpoint = rp.write(root / "model")
    paths = [str(rp.replay_site(root / "site")), str(REPO), os.environ.get("PYTHONPATH", "")]
    with pytest.MonkeyPatch.context() as patch:  # read by ServerProcess when it spawns
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        default = ServerProcess(["--kv-cache-memory-bytes", "96MiB"], root / "default.log")
        replay = ServerProcess([str(checkpoint.folder), *REPLAY_FLAGS, *rp.FAMILY.flags], root / "replay.log")
    reporters = [_LogOnFailure(default, "server"), _LogOnFailure(replay, "replay")]
    for reporter in reporters:
        request.config.pluginmanager.register(reporter)
    try:
        yield _Fleet(default, replay, checkpoint)
    finally:
        for reporter in reporters:
            request.config.pluginmanager.unregister(reporter)
        default.stop()
        replay.stop()


@pytest.fixture(scope="module")
def server(fleet) -> ServerProcess:
    fleet.default.wait_ready()
    return fleet.default


@pytest.fixture(scope="module")
def replay(fleet) -> ServerProcess:
    fleet.replay.wait_ready()
    return fleet.replay


@pytest.fixture(scope="module")
def wire() -> WireLog:
    return WireLog()


@pytest.fixture(autouse=True)
def _validated(wire):
    """After each test: everything the server answered on /v1/responses matches OpenAI's schemas."""
    yield
    wire.check()


def _sdk(server: ServerProcess, wire: WireLog) -> openai.OpenAI:
    # max_retries=0: the SDK would otherwise retry behind the test's back
    http_client = httpx.Client(transport=RecordingTransport(wire), timeout=120)
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, http_client=http_client)


@pytest.fixture(scope="module")
def client(server, wire) -> openai.OpenAI:
    return _sdk(server, wire)


@pytest.fixture(scope="module")
def rclient(replay, wire) -> openai.OpenAI:
    return _sdk(replay, wire)


@pytest.fixture(scope="module")
def http(server, wire) -> httpx.Client:
    with httpx.Client(base_url=server.base_url, transport=RecordingTransport(wire), timeout=120) as c:
        yield c


def _types(events) -> list[str]:
    """Event types with each run of one delta type collapsed to ``type+``."""
    out: list[str] = []
    for name in (e[0] if isinstance(e, tuple) else e.type for e in events):
        if name.endswith(".delta") and out and out[-1] in (name, name + "+"):
            out[-1] = name + "+"
        else:
            out.append(name + "+" if name.endswith(".delta") else name)
    return out


MESSAGE_EVENTS = ["response.output_item.added", "response.content_part.added", "response.output_text.delta+",
                  "response.output_text.done", "response.content_part.done", "response.output_item.done"]
REASONING_EVENTS = ["response.output_item.added", "response.content_part.added", "response.reasoning_text.delta+",
                    "response.reasoning_text.done", "response.content_part.done", "response.output_item.done"]
CALL_EVENTS = ["response.output_item.added", "response.function_call_arguments.delta+",
               "response.function_call_arguments.done", "response.output_item.done"]
START = ["response.created", "response.in_progress"]


# -- text, whole and streamed -------------------------------------------------------------------


def test_whole_text_raw_and_sdk(client, http, wire):
    body = {"model": MODEL, "input": QUESTION, **GREEDY, "request_id": "resp_mine", "metadata": {"case": "whole"},
            "include": ["message.output_text.logprobs"], "top_logprobs": 2}
    data = http.post("/v1/responses", json=body).json()
    assert data["id"].startswith("resp_") and data["id"] != "resp_mine", "ids are server-made"
    assert (data["object"], data["status"], data["model"], data["error"]) == ("response", "completed", MODEL, None)
    assert data["metadata"] == {"case": "whole"} and data["store"] is True and data["max_output_tokens"] == 32
    assert data["completed_at"] >= data["created_at"] > time.time() - 600
    [msg] = data["output"]
    assert (msg["type"], msg["role"], msg["status"]) == ("message", "assistant", "completed") and msg["id"].startswith("msg_")
    [part] = msg["content"]
    assert part["type"] == "output_text" and "Paris" in part["text"], part
    assert part["logprobs"] and all(len(lp["top_logprobs"]) == 2 and lp["logprob"] <= 0 for lp in part["logprobs"])
    usage = data["usage"]
    assert 0 < usage["output_tokens"] <= 32 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    resp = client.responses.create(model=MODEL, input=QUESTION, **GREEDY)  # greedy: the same text
    assert resp.output_text == part["text"] and resp.id != data["id"]
    assert resp.output[0].content[0].logprobs == [], "no logprobs unless included"
    assert wire.check() == 2


def test_max_output_tokens_makes_it_incomplete(client):
    resp = client.responses.create(model=MODEL, input="Write a long story about a dragon.", max_output_tokens=4)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage.output_tokens == 4 and resp.output[0].status == "incomplete" and resp.output_text


def test_stream_events_raw(client, http):
    reference = client.responses.create(model=MODEL, input=QUESTION, **GREEDY).output_text
    with http.stream("POST", "/v1/responses", json={"model": MODEL, "input": QUESTION, **GREEDY, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        r.read()
    events = parse_sse(r.text)
    assert _types(events) == [*START, *MESSAGE_EVENTS, "response.completed"]
    created, final = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] in ("queued", "in_progress") and created["output"] == []
    assert {d["response"]["id"] for t, d in events if "response" in d} == {final["id"]}
    joined = "".join(d["delta"] for t, d in events if t == "response.output_text.delta")
    assert joined == reference == final["output"][0]["content"][0]["text"]
    done = next(d for t, d in events if t == "response.output_text.done")
    assert done["text"] == joined
    item_id = final["output"][0]["id"]
    assert all(d.get("item_id", item_id) == item_id for _, d in events)
    assert events[2][1]["item"]["id"] == item_id and events[2][1]["item"]["status"] == "in_progress"
    assert client.responses.retrieve(final["id"]).output_text == joined, "a streamed response is stored"


def test_stream_helper_matches_final_response(client):
    deltas, seen = [], []
    brief = "Answer in one short sentence."
    with client.responses.stream(model=MODEL, input=QUESTION, instructions=brief, **GREEDY) as stream:
        for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert _types(seen) == [*START, *MESSAGE_EVENTS, "response.completed"]
    assert final.status == "completed" and final.output_text == "".join(deltas) != ""
    assert final.instructions == brief
    assert [e.sequence_number for e in seen] == list(range(len(seen)))


def test_parse_with_a_pydantic_model(client, wire):
    class Capital(BaseModel):
        city: str
        country: str

    resp = client.responses.parse(model=MODEL, input="Give the capital of France as JSON.", text_format=Capital,
                                  max_output_tokens=64, temperature=0)
    assert resp.status == "completed", resp.incomplete_details
    assert isinstance(resp.output_parsed, Capital)
    assert Capital.model_validate_json(resp.output_text) == resp.output_parsed
    fmt = wire.last("POST").json()["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True and fmt["name"] == "Capital", fmt


# -- stored responses ----------------------------------------------------------------------------


def test_previous_response_id_reuses_the_cached_prefix(client):
    first = client.responses.create(model=MODEL, input="My name is Ada and I like green tea. Say hello.", **GREEDY)
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id, **GREEDY)
    assert second.previous_response_id == first.id and second.status in ("completed", "incomplete")
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached >= first.usage.input_tokens // 16 * 16 > 0, (cached, first.usage)
    items = client.responses.input_items.list(second.id).data
    assert [(i.type, i.role, i.content[0].text) for i in items] == [("message", "user", "What is my name?")]


def test_retrieve_then_delete(client, http, wire):
    resp = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=8, metadata={"k": "v"})
    created = wire.last("POST").json()
    got = client.responses.retrieve(resp.id)
    assert wire.last("GET").json() == created and got.metadata == {"k": "v"}
    assert client.responses.delete(resp.id) is None
    assert wire.last("DELETE").json() == {"id": resp.id, "object": "response.deleted", "deleted": True}
    for call in (client.responses.retrieve, client.responses.delete, client.responses.input_items.list):
        with pytest.raises(openai.NotFoundError):
            call(resp.id)
    assert http.get("/v1/responses/resp_0123456789abcdef").status_code == 404


def test_input_items_order_limit_after(client, http):
    items = [{"role": "developer", "content": "Answer in one word."}, {"role": "user", "content": "Hello"},
             {"role": "assistant", "content": "Hi! How can I help?"},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Capital of Italy?"}]}]
    resp = client.responses.create(model=MODEL, input=items, max_output_tokens=8)
    asc = client.responses.input_items.list(resp.id, order="asc").data
    ids = [i.id for i in asc]
    assert [i.role for i in asc] == ["developer", "user", "assistant", "user"] and len(set(ids)) == 4 and all(ids)
    assert [i.content[0].text for i in asc] == ["Answer in one word.", "Hello", "Hi! How can I help?", "Capital of Italy?"]
    assert [i.id for i in client.responses.input_items.list(resp.id).data] == ids[::-1], "desc by default"
    page = http.get(f"/v1/responses/{resp.id}/input_items", params={"order": "asc", "limit": 2}).json()
    assert [i["id"] for i in page["data"]] == ids[:2] and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[1])
    rest = client.responses.input_items.list(resp.id, order="asc", after=ids[1])
    assert [i.id for i in rest.data] == ids[2:] and rest.has_more is False
    paged = client.responses.input_items.list(resp.id, order="asc", limit=1)  # the SDK follows has_more/after
    assert [i.id for i in paged] == ids
    assert http.get(f"/v1/responses/{resp.id}/input_items", params={"limit": 101}).status_code == 400


def test_store_false_is_not_kept(client):
    resp = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, store=False)
    assert resp.store is False and resp.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="And?", previous_response_id=resp.id, max_output_tokens=4)
    assert info.value.code == "previous_response_not_found"


# -- background runs -----------------------------------------------------------------------------


def _poll(client: openai.OpenAI, response_id: str, until: tuple[str, ...], timeout: float = 120.0):
    return wait_until(lambda: (r := client.responses.retrieve(response_id)).status in until and r, timeout,
                      f"response {response_id} to reach {until}", interval=0.2)


def test_background_run_then_poll_and_replay(client, http, wire):
    resp = client.responses.create(model=MODEL, input=QUESTION, background=True, **GREEDY)
    assert resp.background is True and resp.status in ("queued", "in_progress") and resp.id.startswith("resp_")
    final = _poll(client, resp.id, ("completed", "incomplete", "failed", "cancelled"))
    assert final.status == "completed" and "Paris" in final.output_text
    stored = wire.last("GET").json()
    with http.stream("GET", f"/v1/responses/{resp.id}", params={"stream": "true", "starting_after": "1"}) as r:
        assert r.status_code == 200
        r.read()
    events = parse_sse(r.text)
    assert events[0][1]["sequence_number"] == 2 and events[-1][0] == "response.completed"
    assert events[-1][1]["response"] == stored


def test_cancel_a_long_background_run(client):
    resp = client.responses.create(model=MODEL, input="Count from one to one thousand.", background=True,
                                   max_output_tokens=2000, extra_body={"ignore_eos": True})
    _poll(client, resp.id, ("in_progress",), timeout=60)
    cancelled = client.responses.cancel(resp.id)
    assert cancelled.id == resp.id and cancelled.status == "cancelled"
    text = client.responses.retrieve(resp.id).output_text
    time.sleep(1.0)
    again = client.responses.retrieve(resp.id)
    assert again.status == "cancelled" and again.output_text == text, "generation stopped at the cancel"
    assert len(again.output_text) < 2000 * 8
    quick = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, timeout=60)
    assert quick.status in ("completed", "incomplete")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(quick.id)  # not a background run
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_0123456789abcdef")


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "status", "param"), [
    ({"tools": [{"type": "web_search"}]}, 400, "tools"),
    ({"include": ["file_search_call.results"]}, 400, "include"),
    ({"background": True, "store": False}, 400, None),
    ({"reasoning": {"summary": "detailed"}}, 400, None),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]}, 400, None),
    ({"input": [{"type": "item_reference", "id": "msg_0123"}]}, 400, None),
    ({"conversation": "conv_0123"}, 400, None),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata"),
    ({"input": "hello " * 6000, "truncation": "disabled"}, 400, None),
    ({"previous_response_id": "resp_0123456789abcdef"}, 404, "previous_response_id"),
], ids=["web_search_tool", "include", "background_without_store", "reasoning_summary", "input_image", "item_reference",
        "conversation", "metadata_keys", "too_long", "unknown_prev"])
def test_refused_requests(client, fields, status, param):
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 4, **fields}
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(**body)
    assert info.value.status_code == status, info.value
    if param is not None:  # the field, or a path into it (OpenAI writes e.g. "tools[0].type")
        assert info.value.param == param or info.value.param.startswith((f"{param}[", f"{param}.")), info.value.body
    if status == 404:
        assert info.value.code == "previous_response_not_found"


# -- the replay model: function calls, reasoning, store limits ------------------------------------


def _ask(fleet, case: str) -> str:
    return f"Please answer {fleet.checkpoint.case_tokens[case]} now."


def test_function_call_round_trip(fleet, rclient):
    first = rclient.responses.create(model=rp.SERVED, input=_ask(fleet, "call"), tools=[rp.TOOL])
    assert first.status == "completed" and [o.type for o in first.output] == ["reasoning", "function_call"]
    assert first.output[0].content[0].text.strip() == rp.CALL_REASONING.strip()
    call = first.output[1]
    assert call.name == "get_weather" and json.loads(call.arguments) == rp.PARIS and call.status == "completed"
    assert call.call_id and call.id.startswith("fc_") and first.output_text == ""
    output = {"type": "function_call_output", "call_id": call.call_id,
              "output": f"Sunny, 21 C {fleet.checkpoint.case_tokens['answer']}"}
    second = rclient.responses.create(model=rp.SERVED, input=[output], previous_response_id=first.id, tools=[rp.TOOL])
    assert [o.type for o in second.output] == ["reasoning", "message"] and second.output_text.strip() == rp.ANSWER
    assert second.usage.input_tokens > first.usage.input_tokens, "the first turn is rendered again"
    [item] = rclient.responses.input_items.list(second.id).data
    assert (item.type, item.call_id, item.output) == ("function_call_output", call.call_id, output["output"])


def test_function_call_streamed(fleet, rclient, wire):
    with rclient.responses.stream(model=rp.SERVED, input=_ask(fleet, "call"), tools=[rp.TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == rp.PARIS and final.output[1].arguments == args
    raw = wire.last("POST").events()
    assert _types(raw) == [*START, *REASONING_EVENTS, *CALL_EVENTS, "response.completed"]
    assert raw[2][1]["item"]["type"] == "reasoning" and raw[3][1]["part"]["type"] == "reasoning_text"
    added = next(d for t, d in raw if t == "response.output_item.added" and d["item"]["type"] == "function_call")
    assert added["output_index"] == 1 and added["item"]["name"] == "get_weather"
    done = next(d for t, d in raw if t == "response.function_call_arguments.done")
    assert done["arguments"] == args and done["item_id"] == final.output[1].id


def test_reasoning_items(fleet, rclient, wire):
    resp = rclient.responses.create(model=rp.SERVED, input=_ask(fleet, "answer"), reasoning={"effort": "low"})
    assert [o.type for o in resp.output] == ["reasoning", "message"] and resp.reasoning.effort == "low"
    reasoning = resp.output[0]
    assert reasoning.id.startswith("rs_") and reasoning.summary == [] and reasoning.status == "completed"
    assert [(c.type, c.text.strip()) for c in reasoning.content] == [("reasoning_text", rp.REASONING.strip())]
    assert resp.output_text.strip() == rp.ANSWER
    assert 0 < resp.usage.output_tokens_details.reasoning_tokens < resp.usage.output_tokens
    with rclient.responses.stream(model=rp.SERVED, input=_ask(fleet, "answer")) as stream:
        events = list(stream)
        final = stream.get_final_response()
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought == final.output[0].content[0].text == reasoning.content[0].text
    assert _types(wire.last("POST").events()) == [*START, *REASONING_EVENTS, *MESSAGE_EVENTS, "response.completed"]


def test_store_keeps_only_the_newest_entries(fleet, rclient):
    made = [rclient.responses.create(model=rp.SERVED, input=_ask(fleet, "answer")).id for _ in range(3)]
    with pytest.raises(openai.NotFoundError):
        rclient.responses.retrieve(made[0])  # --response-store-max-entries 2: the oldest is gone
    assert [rclient.responses.retrieve(i).id for i in made[1:]] == made[1:]
    with pytest.raises(openai.NotFoundError):
        rclient.responses.create(model=rp.SERVED, input="Hi", previous_response_id=made[0])
