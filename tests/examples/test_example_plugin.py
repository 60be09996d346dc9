"""The example out-of-tree plugin's parser and middleware behave as its README says."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "heron-example-plugin"))
from heron_example_plugin import BracketToolParser, header_middleware  # noqa: E402

TEXT = 'Let me check. [[call get_weather {"city": "Zürich", "days": [1, 2]}]] and [[call now]] done [[call bad {oops]] [[call'


def _stream(text: str, pieces: list[str]):
    parser = BracketToolParser(None, tools=None)
    content, calls = "", {}
    for delta in [parser.parse_delta(p) for p in pieces] + [parser.finish()]:
        if delta is None:
            continue
        content += delta.content or ""
        for call in delta.tool_calls:
            calls.setdefault(call.index, []).append(call)
    return parser, content, calls


def test_parse_whole_text():
    result = BracketToolParser(None).parse(TEXT)
    assert [c.function.name for c in result.tool_calls] == ["get_weather", "now"]
    assert json.loads(result.tool_calls[0].function.arguments) == {"city": "Zürich", "days": [1, 2]}
    assert result.tool_calls[1].function.arguments == "{}"
    assert result.content == "Let me check.  and  done [[call bad {oops]] [[call"
    assert all(c.id.startswith("chatcmpl-tool-") for c in result.tool_calls)


@pytest.mark.parametrize("chunking", ["char", "random", "whole"])
def test_streaming_reassembles_to_parse(chunking):
    if chunking == "char":
        pieces = list(TEXT)
    elif chunking == "whole":
        pieces = [TEXT]
    else:
        rng, pieces, i = random.Random(7), [], 0
        while i < len(TEXT):
            n = rng.randint(1, 9)
            pieces.append(TEXT[i : i + n])
            i += n
    parser, content, calls = _stream(TEXT, pieces)
    expected = BracketToolParser(None).parse(TEXT)
    assert content == expected.content
    assert sorted(calls) == list(range(len(expected.tool_calls)))
    for index, want in enumerate(expected.tool_calls):
        first = calls[index][0]
        assert first.function.name == want.function.name
        assert "".join(d.function.arguments or "" for d in calls[index]) == want.function.arguments


def test_middleware_adds_header():
    import asyncio

    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    wrapped = header_middleware(settings=None)(app)
    asyncio.run(wrapped({"type": "http"}, None, send))
    assert (b"x-heron-example", b"1") in sent[0]["headers"]



def test_the_conformance_kit_passes_on_the_example_parser():
    from heron.testing.tool_parsers import ToolParserCase, check_tool_parser

    cases = [
        ToolParserCase("no call", "Just text.", "Just text.", []),
        ToolParserCase("mixed", TEXT, "Let me check.  and  done [[call bad {oops]] [[call",
                       [("get_weather", {"city": "Zürich", "days": [1, 2]}), ("now", {})]),
        ToolParserCase("only calls", '[[call a {"x": 1}]][[call b {}]]', None, [("a", {"x": 1}), ("b", {})]),
    ]
    check_tool_parser(BracketToolParser, None, cases, random_splits=10)
