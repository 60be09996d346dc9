"""Tool calls for ``tool_choice`` ``required`` and a named function, decoded under a JSON constraint.

The engine constrains the output to JSON (see :mod:`heron.structured.tools`), so even small
models produce valid calls. These two parsers turn that JSON into OpenAI tool calls with the
same contract as format parsers: a named call streams its arguments as they are generated;
``required`` output (a JSON array of ``{"name", "parameters"}``) is turned into calls when the
output ends, since the array is only known to be complete then; an array cut by ``max_tokens``
still yields the calls it completed (``finish_reason`` stays ``length``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from heron.interfaces import ToolParser
from heron.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    ToolParseResult,
    make_tool_call_id,
)
from heron.structured import tool_calls_from_json

__all__ = ("NamedToolCallParser", "RequiredToolCallsParser")


class NamedToolCallParser(ToolParser):
    """The whole output is the arguments object of one call to ``name``."""

    def __init__(self, tokenizer: Any, tools: list[dict] | None = None, *, name: str) -> None:
        super().__init__(tokenizer, tools)
        self.name = name
        self._id: str | None = None

    def parse(self, text: str) -> ToolParseResult:
        return ToolParseResult(content=None, tool_calls=[ToolCall(function=FunctionCall(name=self.name, arguments=text))])

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        if not delta_text:
            return None
        if self._id is None:
            self._id = make_tool_call_id()
            call = DeltaToolCall(index=0, id=self._id, type="function",
                                 function=DeltaFunctionCall(name=self.name, arguments=delta_text))
        else:
            call = DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=delta_text))
        return DeltaMessage(tool_calls=[call])

    def finish(self) -> DeltaMessage | None:
        if self._id is None:  # nothing generated: still one (empty-argument) call
            self._id = make_tool_call_id()
            return DeltaMessage(tool_calls=[DeltaToolCall(index=0, id=self._id, type="function",
                                                          function=DeltaFunctionCall(name=self.name, arguments="{}"))])
        return None


class RequiredToolCallsParser(ToolParser):
    """The output is a JSON array of calls; they are emitted whole when the output ends."""

    def __init__(self, tokenizer: Any, tools: list[dict] | None = None) -> None:
        super().__init__(tokenizer, tools)
        self._text: list[str] = []

    def parse(self, text: str) -> ToolParseResult:
        try:
            calls = tool_calls_from_json(text)
        except (ValueError, TypeError):  # cut by max_tokens: keep the calls that were completed
            calls = _complete_prefix(text)
            if not calls:
                return ToolParseResult(content=text or None)
        return ToolParseResult(content=None, tool_calls=[
            ToolCall(function=FunctionCall(name=name, arguments=args)) for name, args in calls])

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        self._text.append(delta_text)
        return None

    def finish(self) -> DeltaMessage | None:
        result = self.parse("".join(self._text))
        if not result.tool_calls:
            return DeltaMessage(content=result.content) if result.content else None
        return DeltaMessage(tool_calls=[
            DeltaToolCall(index=i, id=c.id, type="function",
                          function=DeltaFunctionCall(name=c.function.name, arguments=c.function.arguments))
            for i, c in enumerate(result.tool_calls)
        ])


def _complete_prefix(text: str) -> list[tuple[str, str]]:
    """The whole ``{"name", "parameters"}`` items at the head of a cut-off JSON array."""
    decoder = json.JSONDecoder()
    head = text.lstrip()
    if not head.startswith("["):
        return []
    calls: list[tuple[str, str]] = []
    at = 1
    while True:
        while at < len(head) and head[at] in " \t\r\n,":
            at += 1
        try:
            item, at = decoder.raw_decode(head, at)
        except ValueError:
            return calls
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            return calls
        calls.append((item["name"], json.dumps(item.get("parameters", {}), ensure_ascii=False)))
