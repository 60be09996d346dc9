"""``example_bracket``: tool calls written as ``[[call NAME {json arguments}]]``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from heron.interfaces import ToolParser
from heron.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    ToolParseResult,
)

__all__ = ("BracketToolParser",)

OPEN, CLOSE = "[[call ", "]]"


def _read_call(body: str) -> tuple[str, str] | None:
    """``NAME {json}`` -> (name, compact JSON arguments), or None when malformed."""
    name, _, raw = body.strip().partition(" ")
    if not name.isidentifier():
        return None
    try:
        args = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return None
    if not isinstance(args, dict):
        return None
    return name, json.dumps(args, ensure_ascii=False)


class BracketToolParser(ToolParser):
    """Finds ``[[call NAME {...}]]`` blocks; malformed blocks stay in the content."""

    def __init__(self, tokenizer, tools=None) -> None:
        super().__init__(tokenizer, tools)
        self._buffer = ""  # text not yet sent: a possible or unfinished block
        self._count = 0
        self._ids: list[str] = []

    def _call_id(self, index: int, name: str) -> str:
        # parse() and parse_delta() must agree on ids for the same call
        while len(self._ids) <= index:
            self._ids.append(self.make_call_id(index, name))
        return self._ids[index]

    def parse(self, text: str) -> ToolParseResult:
        content, calls, rest = [], [], text
        while True:
            start = rest.find(OPEN)
            end = rest.find(CLOSE, start + len(OPEN)) if start >= 0 else -1
            if start < 0 or end < 0:
                content.append(rest)
                break
            parsed = _read_call(rest[start + len(OPEN) : end])
            if parsed is None:
                content.append(rest[: end + len(CLOSE)])
            else:
                content.append(rest[:start])
                name, args = parsed
                calls.append(
                    ToolCall(id=self._call_id(len(calls), name), function=FunctionCall(name=name, arguments=args))
                )
            rest = rest[end + len(CLOSE) :]
        joined = "".join(content)
        return ToolParseResult(content=joined or None, tool_calls=calls)

    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        self._buffer += delta_text
        text, calls = [], []
        while self._buffer:
            start = self._buffer.find(OPEN)
            if start < 0:
                # keep back a tail that could still grow into the opening marker
                keep = next(
                    (k for k in range(min(len(OPEN) - 1, len(self._buffer)), 0, -1)
                     if OPEN.startswith(self._buffer[-k:])),
                    0,
                )
                text.append(self._buffer[: len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep :]
                break
            end = self._buffer.find(CLOSE, start + len(OPEN))
            if end < 0:
                text.append(self._buffer[:start])
                self._buffer = self._buffer[start:]
                break
            parsed = _read_call(self._buffer[start + len(OPEN) : end])
            if parsed is None:
                text.append(self._buffer[: end + len(CLOSE)])
            else:
                text.append(self._buffer[:start])
                name, args = parsed
                index = self._count
                self._count += 1
                calls.append(
                    DeltaToolCall(
                        index=index,
                        id=self._call_id(index, name),
                        type="function",
                        function=DeltaFunctionCall(name=name, arguments=args),
                    )
                )
            self._buffer = self._buffer[end + len(CLOSE) :]
        content = "".join(text)
        if not content and not calls:
            return None
        return DeltaMessage(content=content or None, tool_calls=calls)

    def finish(self) -> DeltaMessage | None:
        # an unterminated block is not a call: it goes out as content
        rest, self._buffer = self._buffer, ""
        return DeltaMessage(content=rest) if rest else None
