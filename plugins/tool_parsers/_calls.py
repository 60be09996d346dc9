"""Calls as region parsers return them, and readers for the JSON shapes models write.

:class:`ParsedCall` is what ``BufferedToolParser.parse_region`` returns per call: a name, the
arguments (an object, or JSON text of one) and optionally the id the format itself carries.
:func:`json_call` / :func:`json_calls` read ``{"name": …, "arguments" | "parameters": {…}}``
objects (alone or in a list); :func:`json_values` reads several JSON values written one after
the other (optionally separated, e.g. by ``;``). Every reader returns None on anything
malformed, so the caller falls back to content.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ("ParsedCall", "arguments_json", "json_call", "json_calls", "json_values")

_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """One call read from a region.

    Attributes:
        name: the function name.
        arguments: a dict, or a JSON text of an object (normalised by the base class).
        id: the format's own id for the call (e.g. Kimi K2's header); None to let the parser
            make one with ``make_call_id``.
    """

    name: str
    arguments: Any = None
    id: str | None = None


def arguments_json(arguments: Any) -> str | None:
    """Arguments as JSON text of an object (None → ``{}``), or None if not a finite JSON object."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    try:  # NaN and Infinity are not JSON: such arguments are malformed
        return json.dumps(arguments, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return None


def json_call(obj: Any, *, args_keys: Sequence[str] = ("arguments", "parameters")) -> ParsedCall | None:
    """``{"name": str, "arguments" or "parameters": object}`` → a call; arguments may be absent."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    present = [k for k in args_keys if k in obj]
    args = obj[present[0]] if present else None
    if arguments_json(args) is None:
        return None
    return ParsedCall(obj["name"], args)


def json_calls(value: Any, *, args_keys: Sequence[str] = ("arguments", "parameters")) -> list[ParsedCall] | None:
    """A call object or a list of them → calls; None if any element is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = [json_call(item, args_keys=args_keys) for item in items]
    return None if any(c is None for c in calls) else calls  # type: ignore[return-value]


def json_values(text: str, separator: str = "") -> list[Any] | None:
    """Parse JSON values written one after another (whitespace and ``separator`` between them)."""
    values: list[Any] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return values or None
        if values and separator:
            if not text.startswith(separator, i):
                return None
            i += len(separator)
            while i < n and text[i].isspace():
                i += 1
            if i == n:
                return values  # a trailing separator is tolerated
        try:
            value, i = _DECODER.raw_decode(text, i)
        except ValueError:
            return None
        values.append(value)
