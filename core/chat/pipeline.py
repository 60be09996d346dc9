"""The per-choice parse pipeline: reasoning parser first, then the tool parser on what is left.

Streaming and non-streaming go through the same object, so both give the same reasoning,
content and calls: a non-streamed response is the concatenation of the streamed deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from heron.protocol import DeltaMessage, FunctionCall, ToolCall

__all__ = ("ChoicePipeline", "PipelineResult")


@dataclass
class PipelineResult:
    """Everything one choice produced, joined."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


class ChoicePipeline:
    """Feeds model output through an optional reasoning parser and an optional tool parser."""

    def __init__(self, reasoning_parser: Any | None = None, tool_parser: Any | None = None, *,
                 max_calls: int | None = None) -> None:
        self.reasoning_parser = reasoning_parser
        self.tool_parser = tool_parser
        self.max_calls = max_calls  # 1 when parallel_tool_calls is false: later calls are dropped
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, text: str, token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        """Take newly generated text; return what may be sent now."""
        if self.reasoning_parser is None:
            return self._tools(text, token_ids)
        delta = self.reasoning_parser.parse_delta(text, token_ids) if text or token_ids else None
        return self._after_reasoning(delta, token_ids)

    def finish(self) -> DeltaMessage | None:
        """End of output: flush both parsers, reasoning first."""
        parts: list[DeltaMessage | None] = []
        if self.reasoning_parser is not None:
            parts.append(self._after_reasoning(self.reasoning_parser.finish(), ()))
        if self.tool_parser is not None:
            parts.append(self._record(self.tool_parser.finish()))
        return _merge([p for p in parts if p is not None])

    def _after_reasoning(self, delta: DeltaMessage | None, token_ids: Sequence[int]) -> DeltaMessage | None:
        if delta is None:
            return None
        reasoning = delta.reasoning
        if reasoning:
            self._reasoning.append(reasoning)
        rest = self._tools(delta.content, token_ids) if delta.content else None
        if rest is None:
            return DeltaMessage(reasoning=reasoning) if reasoning else None
        rest.reasoning = reasoning or None
        return rest

    def _tools(self, text: str | None, token_ids: Sequence[int]) -> DeltaMessage | None:
        if not text:
            return None
        if self.tool_parser is None:
            self._content.append(text)
            return DeltaMessage(content=text)
        return self._record(self.tool_parser.parse_delta(text, token_ids))

    def _record(self, delta: DeltaMessage | None) -> DeltaMessage | None:
        if delta is None:
            return None
        if delta.content:
            self._content.append(delta.content)
        if self.max_calls is not None:
            delta.tool_calls = [c for c in delta.tool_calls if c.index < self.max_calls]
        for call in delta.tool_calls:
            slot = self._calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            slot["id"] = slot["id"] or call.id
            if call.function is not None:
                slot["name"] = slot["name"] or call.function.name
                slot["arguments"] += call.function.arguments or ""
        if not delta.content and not delta.tool_calls and not delta.reasoning:
            return None
        return delta

    @property
    def called_tools(self) -> bool:
        return bool(self._calls)

    def result(self) -> PipelineResult:
        calls = [
            ToolCall(id=c["id"], function=FunctionCall(name=c["name"] or "", arguments=c["arguments"] or "{}"))
            for _, c in sorted(self._calls.items())
        ]
        return PipelineResult(
            content="".join(self._content) or None,
            reasoning="".join(self._reasoning) or None,
            tool_calls=calls,
        )


def _merge(parts: list[DeltaMessage]) -> DeltaMessage | None:
    if not parts:
        return None
    merged = DeltaMessage()
    for p in parts:
        if p.reasoning:
            merged.reasoning = (merged.reasoning or "") + p.reasoning
        if p.content:
            merged.content = (merged.content or "") + p.content
        merged.tool_calls.extend(p.tool_calls)
    return merged
