"""Normalise OpenAI chat messages and tools into what chat templates expect."""

from __future__ import annotations

import json
from typing import Any

from heron.chat.content_format import as_format

__all__ = ("normalize_messages", "normalize_tools")


def _arguments(value: Any) -> Any:
    # OpenAI sends arguments as a JSON string; HF templates iterate or tojson them as a dict
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def normalize_messages(messages: list[dict[str, Any]], content_format: str = "string") -> list[dict[str, Any]]:
    """Messages ready for a template: content as ``content_format`` says (``"string"``: text parts
    joined with newlines; ``"openai"``: a list of text parts), dict arguments, ``reasoning`` on
    both names. Non-text content parts raise ValueError."""
    out = []
    for raw in messages:
        msg = {k: v for k, v in raw.items() if v is not None}
        if "content" in msg or msg.get("role") == "assistant":
            msg["content"] = as_format(msg.get("content"), content_format)
        reasoning = msg.get("reasoning") or msg.get("reasoning_content")
        if reasoning:
            msg["reasoning"] = msg["reasoning_content"] = reasoning
        if msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                call = dict(call)
                fn = dict(call.get("function") or {})
                fn["arguments"] = _arguments(fn.get("arguments", {}))
                call["function"] = fn
                call.setdefault("type", "function")
                calls.append(call)
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def normalize_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Tools as plain dicts (``{"type": "function", "function": {...}}``), or None."""
    if not tools:
        return None
    return [{"type": t.get("type", "function"), "function": t["function"]} for t in tools]
