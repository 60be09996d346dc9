"""BufferedToolParser: what streams when, markers, whitespace, ids, failures and linear cost."""

from __future__ import annotations

import json
import time

from heron.protocol import DeltaMessage
from heron.testing.tool_parsers import ToolParserCase, check_tool_parser, invariant_errors
from heron_plugins.tool_parsers._base import BufferedToolParser, JsonValueEnd, ParsedCall, RegionEnd
from heron_plugins.tool_parsers.hermes import HermesToolParser
from heron_plugins.tool_parsers.xlam import XlamToolParser


class Angle(BufferedToolParser):
    """``<<name json>>`` regions plus an anchored ``@`` (a JSON object to the end of its value)."""

    start_markers = ("<<",)
    anchored_markers = ("@",)
    end_markers = (">>",)

    def region_finder(self, marker: str) -> RegionEnd:
        return JsonValueEnd() if marker == "@" else super().region_finder(marker)

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        if marker == "@":
            return [ParsedCall("at", json.loads(body), id="own-id")]
        name, _, args = body.partition(" ")
        if name == "boom":
            raise RuntimeError("a bug in a region parser is contained")
        return [] if name == "none" else [ParsedCall(name, args or None)]


class Verbatim(Angle):
    strip_around_calls = False


def stream(parser: BufferedToolParser, pieces: list[str]) -> list[DeltaMessage | None]:
    return [parser.parse_delta(p) for p in pieces] + [parser.finish()]


CASES = [
    ToolParserCase("anchored marker", ' @{"a": 1} then', "then", [("at", {"a": 1})]),
    ToolParserCase("anchored marker only at the start", 'x @{"a": 1}', 'x @{"a": 1}', []),
    ToolParserCase("whitespace kept between contents", "A\n<<f {}>>\nB", "A\n\nB", [("f", {})]),
    ToolParserCase("whitespace dropped at the ends", "\n<<f>>\n<<g>>\n", None, [("f", {}), ("g", {})]),
    ToolParserCase("no calls: verbatim", "  \n hi \n", "  \n hi \n", []),
    ToolParserCase("an empty region removes its markup", "a <<none>> b", "a  b", []),
    ToolParserCase("a raising region parser means content", "<<boom {}>> <<f>>", "<<boom {}>>", [("f", {})]),
    ToolParserCase("a failed region resumes after its marker", "<<bad [1]>><<f>>", "<<bad [1]>>", [("f", {})]),
    ToolParserCase("cut inside a marker", "x <", "x <", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Angle, tokenizer, CASES)
    check_tool_parser(Verbatim, tokenizer, [ToolParserCase("verbatim", "A\n<<f>>\nB", "A\n\nB", [("f", {})]),
                                            ToolParserCase("verbatim ends", " <<f>> ", "  ", [("f", {})])])


def test_content_streams_as_soon_as_it_is_decided():
    parser = Angle(None)
    assert parser.parse_delta("Hello") == DeltaMessage(content="Hello")
    assert parser.parse_delta(" wor") == DeltaMessage(content=" wor")
    assert parser.parse_delta("ld <") == DeltaMessage(content="ld")  # " <" may open a region
    assert parser.parse_delta("<f {") is None
    call = parser.parse_delta('"x": 1}>>')
    assert call is not None and call.content is None and call.tool_calls[0].function.arguments == '{"x": 1}'
    assert parser.finish() is None


def test_a_longer_marker_is_awaited_before_a_shorter_anchored_one():
    parser = XlamToolParser(None)
    assert parser.parse_delta("[TOOL") is None  # "[" (bare array) or "[TOOL_CALLS]"?
    deltas = [parser.parse_delta('_CALLS][{"name": "f", "arguments": {}}]'), parser.finish()]
    assert [tc.function.name for d in deltas if d for tc in d.tool_calls] == ["f"]


def test_the_formats_own_id_is_used_and_parse_repeats_streamed_ids():
    parser = Angle(None)
    deltas = stream(parser, list('@{"k": "v"}<<f>>'))
    assert invariant_errors(deltas) == []
    ids = [tc.id for d in deltas if d for tc in d.tool_calls]
    assert ids[0] == "own-id" and ids[1].startswith("chatcmpl-tool-")
    assert [c.id for c in parser.parse('@{"k": "v"}<<f>>').tool_calls] == ids


def test_long_arguments_stream_in_linear_time():
    body = json.dumps({"code": "x = {'a': [1, 2]}\n" * 4000})  # ~80 kB of arguments
    text = f'Sure.\n<tool_call>{{"name": "write", "arguments": {body}}}</tool_call>'
    parser = HermesToolParser(None)
    start = time.perf_counter()
    deltas = [parser.parse_delta(text[i:i + 3]) for i in range(0, len(text), 3)] + [parser.finish()]
    elapsed = time.perf_counter() - start
    assert invariant_errors(deltas) == []
    assert elapsed < 2.0, f"streaming {len(text)} characters took {elapsed:.2f}s"


def test_special_tokens_are_kept_when_tools_are_on():
    from heron.protocol import ChatCompletionRequest

    tools = [{"type": "function", "function": {"name": "f"}}]
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    parser = Angle(None)
    assert parser.adjust_request(ChatCompletionRequest(**base, tools=tools)).skip_special_tokens is False
    assert parser.adjust_request(ChatCompletionRequest(**base)).skip_special_tokens is True
    assert parser.adjust_request(ChatCompletionRequest(**base, tools=tools, tool_choice="none")).skip_special_tokens is True
