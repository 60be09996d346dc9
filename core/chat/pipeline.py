"""The per-choice parse pipeline: reasoning parser first, then the tool parser on what is left.

Streaming and non-streaming go through the same object, so both give the same reasoning,
content and calls: a non-streamed response is the concatenation of the streamed deltas.

``hidden_tokens`` (usually :func:`heron.chat.special_token_texts` of the tokenizer) are texts
removed from the ``content`` and ``reasoning`` that reach the client, after both parsers have
seen them: when a parser asked for special tokens to be kept so that it can read its markers,
the special tokens that are not part of a parsed structure still stay out of the answer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from heron.chat.special_tokens import TokenHider
from heron.protocol import DeltaMessage, FunctionCall, ToolCall

__all__ = ("ChoicePipeline", "PipelineResult")


@dataclass
class PipelineResult:
    """Everything one choice produced, joined."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


class ChoicePipeline:
    """Feeds model output through an optional reasoning parser and an optional tool parser.

    Args:
        reasoning_parser: a fresh ReasoningParser for this choice, or None.
        tool_parser: a fresh ToolParser for this choice, or None.
        max_calls: keep only the first ``max_calls`` calls (1 when ``parallel_tool_calls`` is false).
        hidden_tokens: texts removed from content and reasoning (e.g. special tokens kept for
            the parsers), identically whole and streamed.
    """

    def __init__(self, reasoning_parser: Any | None = None, tool_parser: Any | None = None, *,
                 max_calls: int | None = None, hidden_tokens: Collection[str] | None = None) -> None:
        self.reasoning_parser = reasoning_parser
        self.tool_parser = tool_parser
        self.max_calls = max_calls
        self._hide_content = TokenHider(hidden_tokens) if hidden_tokens else None
        self._hide_reasoning = TokenHider(hidden_tokens) if hidden_tokens else None
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, text: str, token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        """Take newly generated text; return what may be sent now."""
        if self.reasoning_parser is None:
            raw = self._tools(text, token_ids)
        else:
            delta = self.reasoning_parser.parse_delta(text, token_ids) if text or token_ids else None
            raw = self._after_reasoning(delta, token_ids)
        return self._emit([raw], final=False)

    def finish(self) -> DeltaMessage | None:
        """End of output: flush both parsers, reasoning first."""
        parts: list[DeltaMessage | None] = []
        if self.reasoning_parser is not None:
            parts.append(self._after_reasoning(self.reasoning_parser.finish(), ()))
        if self.tool_parser is not None:
            parts.append(self._calls_of(self.tool_parser.finish()))
        return self._emit(parts, final=True)

    def _after_reasoning(self, delta: DeltaMessage | None, token_ids: Sequence[int]) -> DeltaMessage | None:
        if delta is None:
            return None
        rest = self._tools(delta.content, token_ids) if delta.content else None
        if rest is None:
            return DeltaMessage(reasoning=delta.reasoning) if delta.reasoning else None
        rest.reasoning = delta.reasoning or None
        return rest

    def _tools(self, text: str | None, token_ids: Sequence[int]) -> DeltaMessage | None:
        if not text:
            return None
        if self.tool_parser is None:
            return DeltaMessage(content=text)
        return self._calls_of(self.tool_parser.parse_delta(text, token_ids))

    def _calls_of(self, delta: DeltaMessage | None) -> DeltaMessage | None:
        """Drop calls past ``max_calls`` and remember the rest."""
        if delta is None:
            return None
        if self.max_calls is not None:
            delta.tool_calls = [c for c in delta.tool_calls if c.index < self.max_calls]
        for call in delta.tool_calls:
            slot = self._calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            slot["id"] = slot["id"] or call.id
            if call.function is not None:
                slot["name"] = slot["name"] or call.function.name
                slot["arguments"] += call.function.arguments or ""
        return delta

    def _emit(self, parts: list[DeltaMessage | None], final: bool) -> DeltaMessage | None:
        """Join ``parts``, hide what must not reach the client, and record what is sent."""
        merged = _merge([p for p in parts if p is not None])
        reasoning = merged.reasoning if merged else None
        content = merged.content if merged else None
        if self._hide_reasoning is not None and (reasoning or final):
            reasoning = self._hide_reasoning.feed(reasoning or "", final)
        if self._hide_content is not None and (content or final):
            content = self._hide_content.feed(content or "", final)
        if reasoning:
            self._reasoning.append(reasoning)
        if content:
            self._content.append(content)
        calls = merged.tool_calls if merged else []
        if not reasoning and not content and not calls:
            return None
        return DeltaMessage(reasoning=reasoning or None, content=content or None, tool_calls=calls)

    @property
    def called_tools(self) -> bool:
        """Whether at least one tool call was emitted."""
        return bool(self._calls)

    def result(self) -> PipelineResult:
        """Everything sent so far, joined (the whole response once ``finish`` was called)."""
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
    if len(parts) == 1:
        return parts[0]
    merged = DeltaMessage()
    for p in parts:
        if p.reasoning:
            merged.reasoning = (merged.reasoning or "") + p.reasoning
        if p.content:
            merged.content = (merged.content or "") + p.content
        merged.tool_calls.extend(p.tool_calls)
    return merged
