"""Reasoning and tool calls through the chat route, with scripted model output (no real reasoning model).

Checks the pipeline order (reasoning split first, tool parser on the rest), the thinking switch,
that constraints wait for the end of reasoning, tool_choice modes, and that streaming and
non-streaming carry the same reasoning, content and calls.
"""

from __future__ import annotations

import json

import pytest

from tests.core.server.test_routes import _events

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _streamed(client, payload) -> dict:
    """Join a stream's deltas back into one message (and the finish reason)."""
    events = _events(client.post(CHAT, json={**payload, "stream": True}))
    assert events[-1] == "[DONE]"
    reasoning, reasoning_content, content, calls, finish = "", "", "", {}, None
    for ev in events[:-1]:
        for ch in ev["choices"]:
            d = ch["delta"]
            reasoning += d.get("reasoning") or ""
            reasoning_content += d.get("reasoning_content") or ""
            content += d.get("content") or ""
            for c in d.get("tool_calls") or []:
                slot = calls.setdefault(c["index"], {"id": None, "name": None, "arguments": ""})
                if c.get("id"):
                    assert slot["id"] is None, "a call's id is sent once"
                    slot["id"] = c["id"]
                fn = c.get("function") or {}
                if fn.get("name"):
                    assert slot["name"] is None, "a call's name is sent once"
                    slot["name"] = fn["name"]
                slot["arguments"] += fn.get("arguments") or ""
            finish = ch.get("finish_reason") or finish
    return {"reasoning": reasoning or None, "reasoning_content": reasoning_content or None, "content": content or None,
            "tool_calls": [calls[i] for i in sorted(calls)], "finish_reason": finish}


def _whole(client, payload) -> dict:
    resp = client.post(CHAT, json=payload)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    choice = body["choices"][0]
    msg = choice["message"]
    calls = [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
             for c in msg.get("tool_calls") or []]
    return {"reasoning": msg.get("reasoning"), "reasoning_content": msg.get("reasoning_content"),
            "content": msg.get("content") or None, "tool_calls": calls, "finish_reason": choice["finish_reason"],
            "usage": body["usage"]}


def _same(whole: dict, streamed: dict) -> None:
    for key in ("reasoning", "reasoning_content", "content", "finish_reason"):
        assert whole[key] == streamed[key], key
    assert [(c["name"], json.loads(c["arguments"])) for c in whole["tool_calls"]] == \
        [(c["name"], json.loads(c["arguments"])) for c in streamed["tool_calls"]]


def test_reasoning_then_answer_both_ways(make_client):
    client = make_client("<think>Paris is in France.</think>It is sunny.", reasoning_parser="qwen3")
    whole = _whole(client, {"messages": MSG})
    assert whole["reasoning"] == whole["reasoning_content"] == "Paris is in France."
    assert whole["content"] == "It is sunny."
    assert whole["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    _same(whole, _streamed(client, {"messages": MSG}))


def test_thinking_off_puts_everything_in_content(make_client):
    client = make_client("<think>not reasoning</think>answer", reasoning_parser="qwen3")
    payload = {"messages": MSG, "chat_template_kwargs": {"enable_thinking": False}}
    whole = _whole(client, payload)
    assert whole["reasoning"] is None and whole["content"] == "<think>not reasoning</think>answer"
    _same(whole, _streamed(client, payload))


def test_server_default_kwargs_and_request_override(make_client):
    client = make_client("<think>r</think>a", reasoning_parser="qwen3",
                         default_chat_template_kwargs={"enable_thinking": False})
    assert _whole(client, {"messages": MSG})["reasoning"] is None
    on = _whole(client, {"messages": MSG, "chat_template_kwargs": {"enable_thinking": True}})
    assert on["reasoning"] == "r" and on["content"] == "a"


def test_include_reasoning_false_and_reasoning_content_off(make_client):
    client = make_client("<think>hidden</think>shown", reasoning_parser="qwen3", reasoning_content=False)
    whole = _whole(client, {"messages": MSG})
    assert whole["reasoning"] == "hidden" and whole["reasoning_content"] is None
    dropped = _whole(client, {"messages": MSG, "include_reasoning": False})
    assert dropped["reasoning"] is None and dropped["content"] == "shown"
    streamed = _streamed(client, {"messages": MSG, "include_reasoning": False})
    assert streamed["reasoning"] is None and streamed["content"] == "shown"


def test_tool_call_after_reasoning_is_parsed(make_client):
    client = make_client("<think>I should call the tool.</think>" + CALL, reasoning_parser="qwen3",
                         tool_call_parser="hermes", enable_auto_tool_choice=True)
    payload = {"messages": MSG, "tools": TOOLS}
    whole = _whole(client, payload)
    assert whole["reasoning"] == "I should call the tool."
    assert [(c["name"], json.loads(c["arguments"])) for c in whole["tool_calls"]] == [("get_weather", {"city": "Paris"})]
    assert whole["tool_calls"][0]["id"].startswith("chatcmpl-tool-")
    assert whole["finish_reason"] == "tool_calls" and whole["content"] is None
    _same(whole, _streamed(client, payload))


def test_tool_call_inside_reasoning_is_not_a_call(make_client):
    client = make_client("<think>maybe " + CALL + "</think>No call needed.", reasoning_parser="qwen3",
                         tool_call_parser="hermes", enable_auto_tool_choice=True)
    whole = _whole(client, {"messages": MSG, "tools": TOOLS})
    assert whole["tool_calls"] == [] and whole["content"] == "No call needed."
    assert whole["finish_reason"] == "stop" and CALL in whole["reasoning"]


def test_parallel_tool_calls_false_keeps_the_first_call(make_client):
    second = CALL.replace("get_weather", "get_time").replace('{"city": "Paris"}', "{}")
    client = make_client(CALL + "\n" + second, tool_call_parser="hermes", enable_auto_tool_choice=True)
    both = _whole(client, {"messages": MSG, "tools": TOOLS})
    assert [c["name"] for c in both["tool_calls"]] == ["get_weather", "get_time"]
    payload = {"messages": MSG, "tools": TOOLS, "parallel_tool_calls": False}
    one = _whole(client, payload)
    assert [c["name"] for c in one["tool_calls"]] == ["get_weather"]
    _same(one, _streamed(client, payload))


def test_json_constraint_waits_for_the_end_of_reasoning(make_client):
    client = make_client('<think>x</think>{"a": 1}', reasoning_parser="qwen3")
    whole = _whole(client, {"messages": MSG, "response_format": {"type": "json_object"}})
    assert whole["content"] == '{"a": 1}'
    _, params = client.engine.seen[-1]
    assert params.structured_outputs.json_object
    gate = params.reasoning_gate()  # a factory: one gate per sequence
    assert gate is not None  # the engine applies the grammar once the gate says reasoning ended
    tok = client.engine.tokenizer
    assert not gate.is_reasoning_end(tok.encode("<think>still thinking", add_special_tokens=False))
    assert gate.is_reasoning_end(tok.encode("<think>done</think>", add_special_tokens=False))
    _whole(client, {"messages": MSG, "response_format": {"type": "json_object"},
                    "chat_template_kwargs": {"enable_thinking": False}})
    assert client.engine.seen[-1][1].reasoning_gate is None  # thinking off: constrained from the start


def test_tool_choice_required_is_constrained_and_parsed(make_client):
    client = make_client('[{"name": "get_weather", "parameters": {"city": "Paris"}}, {"name": "get_time", "parameters": {}}]')
    payload = {"messages": MSG, "tools": TOOLS, "tool_choice": "required"}
    whole = _whole(client, payload)
    assert [(c["name"], json.loads(c["arguments"])) for c in whole["tool_calls"]] == \
        [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert whole["finish_reason"] == "tool_calls" and whole["content"] is None
    schema = client.engine.seen[-1][1].structured_outputs.json
    assert schema["type"] == "array" and schema["minItems"] == 1 and "maxItems" not in schema
    _same(whole, _streamed(client, payload))
    _whole(client, {**payload, "parallel_tool_calls": False})
    assert client.engine.seen[-1][1].structured_outputs.json["maxItems"] == 1


def test_named_tool_choice_streams_arguments(make_client):
    client = make_client('{"city": "Paris"}')
    payload = {"messages": MSG, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    whole = _whole(client, payload)
    assert [(c["name"], json.loads(c["arguments"])) for c in whole["tool_calls"]] == [("get_weather", {"city": "Paris"})]
    assert whole["finish_reason"] == "tool_calls"
    assert client.engine.seen[-1][1].structured_outputs.json == TOOLS[0]["function"]["parameters"]
    _same(whole, _streamed(client, payload))


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
        ({"tool_choice": "none"}, "tool_choice"),
    ],
)
def test_tool_choice_errors(make_client, payload, param):
    client = make_client()
    resp = client.post(CHAT, json={"messages": MSG, **payload})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_tool_choice_none_does_not_parse(make_client):
    client = make_client(CALL, tool_call_parser="hermes", enable_auto_tool_choice=True)
    whole = _whole(client, {"messages": MSG, "tools": TOOLS, "tool_choice": "none"})
    assert whole["tool_calls"] == [] and whole["content"] == CALL


def test_required_output_cut_by_max_tokens_keeps_completed_calls():
    from heron.chat.tool_choice import RequiredToolCallsParser

    text = '[{"name": "get_time", "parameters": {}}, {"name": "get_weather", "parameters": {"city": "Pa'
    result = RequiredToolCallsParser(None, TOOLS).parse(text)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls] == [("get_time", {})]
    assert RequiredToolCallsParser(None, TOOLS).parse('[{"name": "get_ti').content == '[{"name": "get_ti'


# -- special tokens: kept for the parsers, hidden from the answer ---------------------------------

HIDDEN = frozenset({"</s>", "[TOOL_CALLS]", "<|stray|>", "<|stray|>x", "[INST]"})


def _hide_whole(text: str, texts) -> str:
    """Reference: left to right, drop the longest hidden text starting at each position."""
    ordered = sorted(texts, key=len, reverse=True)
    out, i = [], 0
    while i < len(text):
        hit = next((t for t in ordered if text.startswith(t, i)), None)
        if hit is None:
            out.append(text[i])
            i += 1
        else:
            i += len(hit)
    return "".join(out)


def _chunkings(text: str):
    yield [text]
    yield list(text)
    for size in (2, 3, 5):
        yield [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("text", [
    "plain text, nothing hidden",
    "a</s>b[INST]c",
    "<|stray|>x then <|stray|> then <|stray|",
    "[TOOL_CALLS[TOOL_CALLS]]",
    "<</s></s>>",
    "ends with a partial [TOOL_CA",
])
def test_token_hider_matches_a_whole_scan_however_chunked(text):
    from heron.chat import TokenHider

    expected = _hide_whole(text, HIDDEN)
    for chunks in _chunkings(text):
        hider = TokenHider(HIDDEN)
        got = "".join(hider.feed(c) for c in chunks) + hider.feed("", final=True)
        assert got == expected, chunks


def test_token_hider_holds_only_what_may_still_become_hidden():
    from heron.chat import TokenHider

    hider = TokenHider(HIDDEN)
    assert hider.feed("Hello [TOOL") == "Hello "  # may still become [TOOL_CALLS]
    assert hider.feed("S] world") == "[TOOLS] world"
    assert hider.feed("<|stray|>") == ""  # may still become <|stray|>x
    assert hider.feed("y") == "y"
    assert TokenHider(()).feed("</s>") == "</s>"  # nothing to hide: text passes verbatim


def test_special_token_texts_are_what_skip_special_tokens_drops():
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from heron.chat import special_token_texts

    raw = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.add_special_tokens([AddedToken("[TOOL_CALLS]", special=True), AddedToken("</s>", special=True)])
    raw.add_tokens([AddedToken("<tool_call>", special=False)])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    texts = special_token_texts(tok)
    assert {"[TOOL_CALLS]", "</s>"} <= texts and "<tool_call>" not in texts
    ids = tok.encode("a [TOOL_CALLS] <tool_call> </s>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True).split() == ["a", "<tool_call>"]
    assert special_token_texts(tok) is texts  # cached per tokenizer


def _run(pipe, chunks):
    """Feed ``chunks`` then finish; return (joined deltas, pipe.result())."""
    deltas = [pipe.feed(c) for c in chunks] + [pipe.finish()]
    joined = {"content": "", "reasoning": "", "calls": []}
    for d in deltas:
        if d is None:
            continue
        joined["content"] += d.content or ""
        joined["reasoning"] += d.reasoning or ""
        joined["calls"] += [(c.function.name, json.loads(c.function.arguments)) for c in d.tool_calls]
    return joined, pipe.result()


@pytest.mark.parametrize(("reasoning", "tool", "text", "want"), [
    (None, "mistral", 'Let me<|stray|> check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}</s>',
     ("Let me check.", None, [("get_weather", {"city": "Paris"})])),
    ("mistral", "mistral", '[THINK]Paris<|stray|>, France[/THINK]OK[INST][TOOL_CALLS]get_time[ARGS]{}',
     ("OK", "Paris, France", [("get_time", {})])),
    ("mistral", None, "[THINK]r</s>[/THINK]answer</s>", ("answer", "r", [])),
    (None, None, "</s>", (None, None, [])),
])
def test_pipeline_hides_special_tokens_that_no_parser_consumed(reasoning, tool, text, want):
    from heron.chat import ChoicePipeline
    from heron.plugins import registry

    def pipe():
        r = registry("reasoning_parsers").load(reasoning)(None) if reasoning else None
        t = registry("tool_parsers").load(tool)(None, TOOLS) if tool else None
        return ChoicePipeline(r, t, hidden_tokens=HIDDEN)

    for chunks in _chunkings(text):
        joined, result = _run(pipe(), chunks)
        assert (result.content, result.reasoning, [(c.function.name, json.loads(c.function.arguments))
                                                   for c in result.tool_calls]) == want, chunks
        assert (joined["content"] or None, joined["reasoning"] or None, joined["calls"]) == want, chunks


def test_pipeline_without_hidden_tokens_keeps_text_verbatim():
    from heron.chat import ChoicePipeline

    joined, result = _run(ChoicePipeline(), ["a</s>", "b"])
    assert result.content == joined["content"] == "a</s>b"


SPECIAL_MARKER_TOOL_PARSERS = ("mistral", "deepseek_v3", "deepseek_v31", "deepseek_v32", "kimi_k2", "openai",
                               "hermes", "llama3_json", "step3", "internlm", "lfm2", "functiongemma", "apertus")
SPECIAL_MARKER_REASONING = ("mistral", "openai_gptoss", "cohere_command3", "gemma4", "seed_oss", "kimi_k2",
                            "hunyuan_a13b", "step3")


@pytest.mark.parametrize("name", SPECIAL_MARKER_TOOL_PARSERS)
def test_tool_parsers_with_special_markers_keep_special_tokens(name):
    from heron.plugins import registry
    from heron.protocol.chat import ChatCompletionRequest

    parser = registry("tool_parsers").load(name)(None, TOOLS)
    base = {"model": "m", "messages": MSG}
    req = ChatCompletionRequest(**base, tools=TOOLS)
    assert parser.adjust_request(req) is req and req.skip_special_tokens is False
    off = ChatCompletionRequest(**base, tools=TOOLS, tool_choice="none")
    assert parser.adjust_request(off).skip_special_tokens is True


@pytest.mark.parametrize("name", SPECIAL_MARKER_REASONING)
def test_reasoning_parsers_with_special_markers_keep_special_tokens(name):
    from heron.plugins import registry
    from heron.protocol.chat import ChatCompletionRequest

    req = ChatCompletionRequest(model="m", messages=MSG)
    assert registry("reasoning_parsers").load(name)(None).adjust_request(req) is req
    assert req.skip_special_tokens is False


@pytest.mark.parametrize("name", ["qwen3", "deepseek_r1", "olmo3", "granite"])
def test_reasoning_parsers_with_plain_markers_change_nothing(name):
    from heron.plugins import registry
    from heron.protocol.chat import ChatCompletionRequest

    req = ChatCompletionRequest(model="m", messages=MSG)
    assert registry("reasoning_parsers").load(name)(None).adjust_request(req) is req
    assert req.skip_special_tokens is True


def test_route_keeps_special_tokens_for_the_parser_and_hides_the_rest(make_client):
    """The route applies adjust_request (skip_special_tokens off) and hides unconsumed special tokens."""
    client = make_client("Sure<|im_start|> thing.\n" + CALL, tool_call_parser="hermes", enable_auto_tool_choice=True)
    payload = {"messages": MSG, "tools": TOOLS}
    whole = _whole(client, payload)
    assert client.engine.seen[-1][1].skip_special_tokens is False  # hermes asked to keep them
    assert whole["content"] == "Sure thing." and whole["finish_reason"] == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in whole["tool_calls"]] == [("get_weather", {"city": "Paris"})]
    _same(whole, _streamed(client, payload))
    kept = _whole(client, {**payload, "skip_special_tokens": False})  # the client's own choice: verbatim
    assert kept["content"] == "Sure<|im_start|> thing."
    plain = _whole(client, {"messages": MSG})  # no tools: nothing changed, the detokenizer skips them
    assert client.engine.seen[-1][1].skip_special_tokens is True
    assert plain["content"] == "Sure thing.\n" + CALL
