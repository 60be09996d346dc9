"""``/v1/responses`` over the scripted engine: items, events, store, background runs and 400s.

Every body and every stream event is checked against OpenAI's published schemas
(:mod:`tests.openai_schemas`). The end-to-end tests (``tests/e2e/test_responses.py``) drive the same
routes through the openai SDK and a real model.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.openai_schemas import validate, validate_event

URL = "/v1/responses"
TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _create(client, **body) -> dict:
    r = client.post(URL, json=body)
    assert r.status_code == 200, r.text
    validate(r.json(), "Response")
    return r.json()


def _stream(client, **body) -> list[dict]:
    r = client.post(URL, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    events = []
    for block in r.text.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        validate_event(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def _error(client, status: int, param: str | None, **body) -> dict:
    r = client.post(URL, json=body)
    assert r.status_code == status, r.text
    validate(r.json(), "ErrorResponse")
    assert r.json()["error"]["param"] == param, r.json()
    return r.json()["error"]


def test_text_whole_and_streamed_hold_the_same_output(make_client):
    client = make_client("Hello there, friend.")
    whole = _create(client, input="Say hi", instructions="Be brief.", metadata={"k": "v"}, user="u1")
    assert whole["status"] == "completed" and whole["completed_at"] is not None
    [msg] = whole["output"]
    assert msg["type"] == "message" and msg["id"].startswith("msg_") and msg["status"] == "completed"
    assert msg["content"][0]["text"] == "Hello there, friend."
    assert whole["instructions"] == "Be brief." and whole["metadata"] == {"k": "v"} and whole["user"] == "u1"
    usage = whole["usage"]
    assert usage["output_tokens"] == 5 and usage["total_tokens"] == usage["input_tokens"] + 5
    events = _stream(client, input="Say hi")
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert deltas == final["output"][0]["content"][0]["text"] == "Hello there, friend."
    assert final["output"][0]["id"] == events[2]["item"]["id"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_instructions_and_input_items_reach_the_template(make_client):
    client = make_client(lambda prompt: json.dumps(prompt))  # the model echoes its prompt
    out = _create(client, instructions="SYS", input=[
        {"role": "developer", "content": "DEV"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "U1"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A1"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "RAINY"},
        {"role": "user", "content": "U2"}], tools=[TOOL], tool_choice="none", max_output_tokens=400)
    prompt = json.loads(out["output"][0]["content"][0]["text"])
    order = [prompt.index(s) for s in ("SYS", "DEV", "U1", "A1", "RAINY", "U2")]
    assert order == sorted(order)
    assert "system\nDEV" in prompt  # developer is a system message
    items = client.get(f"{URL}/{out['id']}/input_items", params={"order": "asc"}).json()
    validate(items, "ResponseItemList")
    assert [i["type"] for i in items["data"]] == ["message", "message", "message", "function_call",
                                                  "function_call_output", "message"]
    assert items["data"][0]["role"] == "developer" and items["data"][2]["content"][0]["type"] == "output_text"
    assert len({i["id"] for i in items["data"]}) == 6


def test_function_call_item_whole_and_streamed(make_client):
    client = make_client(CALL, enable_auto_tool_choice=True, tool_call_parser="hermes")
    whole = _create(client, input="Weather in Paris?", tools=[TOOL])
    [call] = whole["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["id"].startswith("fc_")
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"]
    assert whole["tools"][0]["name"] == "get_weather" and whole["status"] == "completed"
    events = _stream(client, input="Weather in Paris?", tools=[TOOL])
    args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(args) == json.loads(done["arguments"]) == {"city": "Paris"} and done["name"] == "get_weather"
    assert events[-1]["response"]["output"][0]["arguments"] == done["arguments"]


def test_reasoning_item_comes_first(make_client):
    client = make_client("<think>Paris is in France.</think>It is sunny.", reasoning_parser="qwen3")
    whole = _create(client, input="Weather?", reasoning={"effort": "low"})
    rs, msg = whole["output"]
    assert rs["type"] == "reasoning" and rs["content"] == [{"type": "reasoning_text", "text": "Paris is in France."}]
    assert msg["content"][0]["text"] == "It is sunny."
    assert whole["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
    assert whole["reasoning"]["effort"] == "low"
    events = _stream(client, input="Weather?")
    kinds = [e["type"] for e in events]
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    text = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert text == "Paris is in France."


def test_reasoning_effort_reaches_the_template(make_client):
    client = make_client(lambda prompt: "effort=" + ("high" if "EFFORT:high" in prompt else "none"))
    client.app.state.heron.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}EFFORT:{{ reasoning_effort }}"
    assert _create(client, input="x", reasoning={"effort": "high"})["output"][0]["content"][0]["text"] == "effort=high"


def test_max_output_tokens_makes_it_incomplete(make_client):
    client = make_client("one two three four five six")
    out = _create(client, input="count", max_output_tokens=2)
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete" and out["usage"]["output_tokens"] == 2
    events = _stream(client, input="count", max_output_tokens=2)
    assert events[-1]["type"] == "response.incomplete"


def test_logprobs_go_into_output_text(make_client):
    client = make_client("Hello there")
    out = _create(client, input="x", include=["message.output_text.logprobs"], top_logprobs=2)
    lps = out["output"][0]["content"][0]["logprobs"]
    assert len(lps) == 2 and all(len(lp["top_logprobs"]) == 2 for lp in lps)
    assert "".join(lp["token"] for lp in lps) == "Hello there"
    events = _stream(client, input="x", include=["message.output_text.logprobs"])
    assert sum(len(e["logprobs"]) for e in events if e["type"] == "response.output_text.delta") == 2
    assert _create(client, input="x")["output"][0]["content"][0]["logprobs"] == []


def test_json_schema_format_constrains_the_output(make_client):
    client = make_client('{"city": "Paris"}')
    fmt = {"type": "json_schema", "name": "city", "strict": True, "schema": TOOL["parameters"]}
    out = _create(client, input="x", text={"format": fmt})
    assert json.loads(out["output"][0]["content"][0]["text"]) == {"city": "Paris"}
    assert out["text"]["format"]["name"] == "city"
    assert client.engine.seen[-1][1].structured_outputs is not None


def test_previous_response_continues_the_conversation(make_client):
    client = make_client(lambda prompt: f"turns={prompt.count('<|im_start|>user')}")
    first = _create(client, input="first", instructions="OLD")
    second = _create(client, input="second", previous_response_id=first["id"], instructions="NEW")
    assert second["output"][0]["content"][0]["text"] == "turns=2"
    assert second["previous_response_id"] == first["id"]
    prompt = client.engine.tokenizer.decode(client.engine.seen[-1][0])
    assert "first" in prompt and "turns=1" in prompt and "NEW" in prompt and "OLD" not in prompt
    third = _create(client, input="third", previous_response_id=second["id"])
    assert third["output"][0]["content"][0]["text"] == "turns=3"
    # input_items list this turn's input only
    items = client.get(f"{URL}/{third['id']}/input_items").json()["data"]
    assert [i["content"][0]["text"] for i in items] == ["third"]


def test_store_false_is_not_kept(make_client):
    client = make_client()
    out = _create(client, input="x", store=False)
    assert out["store"] is False
    assert client.get(f"{URL}/{out['id']}").status_code == 404
    err = _error(client, 404, "previous_response_id", input="y", previous_response_id=out["id"])
    assert err["code"] == "previous_response_not_found"


def test_retrieve_delete_and_input_item_paging(make_client):
    client = make_client()
    out = _create(client, input=[{"role": "user", "content": f"m{i}"} for i in range(5)])
    got = client.get(f"{URL}/{out['id']}").json()
    validate(got, "Response")
    assert got == out
    page = client.get(f"{URL}/{out['id']}/input_items", params={"limit": 2}).json()
    validate(page, "ResponseItemList")
    assert [i["content"][0]["text"] for i in page["data"]] == ["m4", "m3"] and page["has_more"] is True
    rest = client.get(f"{URL}/{out['id']}/input_items", params={"limit": 10, "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m1", "m0"] and rest["has_more"] is False
    assert client.get(f"{URL}/{out['id']}/input_items", params={"limit": 0}).status_code == 400
    gone = client.delete(f"{URL}/{out['id']}")
    assert gone.json() == {"id": out["id"], "object": "response.deleted", "deleted": True}
    for r in (client.get(f"{URL}/{out['id']}"), client.delete(f"{URL}/{out['id']}"),
              client.get(f"{URL}/{out['id']}/input_items")):
        assert r.status_code == 404
        validate(r.json(), "ErrorResponse")


def test_response_ids_are_the_servers_own(make_client):
    client = make_client()
    out = _create(client, input="x", request_id="my-id")
    r = client.post(URL, json={"input": "x"}, headers={"X-Request-Id": "hdr-id"})
    for rid in (out["id"], r.json()["id"]):
        assert rid.startswith("resp_") and "my-id" not in rid and "hdr-id" not in rid


def test_store_limit_evicts_the_oldest(make_client):
    client = make_client(response_store_max_entries=2)
    ids = [_create(client, input=f"x{i}")["id"] for i in range(3)]
    assert [client.get(f"{URL}/{rid}").status_code for rid in ids] == [404, 200, 200]


def _wait(client, rid: str, status: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = client.get(f"{URL}/{rid}").json()
        validate(got, "Response")
        if got["status"] == status:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{rid} never reached {status}: {got['status']}")


def test_background_runs_poll_replay_and_cancel(make_client):
    client = make_client("a b c d e f g h")
    client.engine.delay = 0.02
    out = _create(client, input="x", background=True)
    assert out["status"] == "queued" and out["background"] is True
    done = _wait(client, out["id"], "completed")
    assert done["output"][0]["content"][0]["text"] == "a b c d e f g h"
    replay = client.get(f"{URL}/{out['id']}", params={"stream": "true", "starting_after": 3})
    events = [json.loads(b.split("data: ", 1)[1]) for b in replay.text.strip().split("\n\n")]
    assert events[0]["sequence_number"] == 4 and events[-1]["type"] == "response.completed"
    slow = make_client("word " * 400)
    slow.engine.delay = 0.05
    run = _create(slow, input="x", background=True)
    time.sleep(0.3)
    cancelled = slow.post(f"{URL}/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    validate(cancelled.json(), "Response")
    assert cancelled.json()["status"] == "cancelled"
    assert _wait(slow, run["id"], "cancelled")["status"] == "cancelled"
    assert slow.engine.aborted and not slow.engine.active  # the engine request was aborted
    assert slow.post(f"{URL}/{_create(slow, input='y', max_output_tokens=2)['id']}/cancel").status_code == 400


def test_truncation_auto_drops_old_turns(make_client):
    client = make_client("ok", max_model_len=120)
    long = [{"role": "user", "content": "word " * 30}, {"role": "assistant", "content": "fine"}] * 3
    long.append({"role": "user", "content": "LAST"})
    err = _error(client, 400, "input", input=long)
    assert err["code"] == "context_length_exceeded"
    out = _create(client, input=long, truncation="auto", max_output_tokens=2)
    assert out["truncation"] == "auto" and out["usage"]["input_tokens"] < 120
    assert "LAST" in client.engine.tokenizer.decode(client.engine.seen[-1][0])


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"include": ["reasoning.encrypted_content"]}, "include[0]"),
    ({"background": True, "store": False}, "background"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": []}, "input"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"reasoning": {"summary": "detailed"}}, "reasoning.summary"),
    ({"metadata": {"k": "v" * 600}}, "metadata.k"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"temperature": 5}, "temperature"),
    ({"tool_choice": {"type": "file_search"}, "tools": [TOOL]}, "tool_choice"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
])
def test_bad_requests_are_400_naming_the_field(make_client, body, param):
    client = make_client()
    _error(client, 400, param, **{"input": "x", **body})
    assert not client.engine.active


def test_unknown_ids_are_404(make_client):
    client = make_client()
    for r in (client.get(f"{URL}/resp_nope"), client.delete(f"{URL}/resp_nope"),
              client.post(f"{URL}/resp_nope/cancel"), client.get(f"{URL}/resp_nope/input_items")):
        assert r.status_code == 404, r.text
        validate(r.json(), "ErrorResponse")


def test_background_stream_survives_the_client_leaving(make_client):
    client = make_client("a b c d e f")
    client.engine.delay = 0.02
    with client.stream("POST", URL, json={"input": "x", "background": True, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines) == "event: response.created"
        created = json.loads(next(lines).removeprefix("data: "))  # then the client drops the stream
    validate_event(created)
    assert created["response"]["status"] == "queued"
    done = _wait(client, created["response"]["id"], "completed")
    assert done["output"][0]["content"][0]["text"] == "a b c d e f"
