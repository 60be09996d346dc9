"""Normalise OpenAI chat messages and tools into what chat templates expect."""

from __future__ import annotations

import json
from typing import Any

__all__ = ("normalize_messages", "normalize_tools")


def _text_of(content: Any) -> Any:
    """Join text parts; templates mostly expect a string. Non-text parts are refused upstream."""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"content part of type {kind!r} is not supported by this text-only model")
            texts.append(part.get("text", ""))
        return "".join(texts)
    return content


def _arguments(value: Any) -> Any:
    # OpenAI sends arguments as a JSON string; HF templates iterate or tojson them as a dict
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages ready for a template: text content, dict arguments, ``reasoning`` on both names."""
    out = []
    for raw in messages:
        msg = {k: v for k, v in raw.items() if v is not None}
        if "content" in msg:
            msg["content"] = _text_of(msg["content"])
        elif msg.get("role") == "assistant":
            msg["content"] = ""
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
