"""Read Python-style calls (``[get_weather(city="Paris"), f(x=1)]``) with ``ast``, never eval.

Only keyword arguments with literal values are accepted: strings, numbers, booleans, None,
lists, tuples and dicts of those (``true``/``false``/``null`` are read as JSON would). Anything
else (a variable, an expression, ``**kwargs``, positional arguments, a non-finite float) makes
the whole region malformed, so it falls back to content.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from heron_plugins.tool_parsers._calls import ParsedCall

__all__ = ("pythonic_call", "pythonic_calls")

_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class _NotLiteral(ValueError):
    pass


def pythonic_calls(src: str) -> list[ParsedCall] | None:
    """``[f(a=1), g()]`` → calls; None when not a non-empty list of literal-only calls."""
    try:
        node = ast.parse(src.strip(), mode="eval").body
        if not isinstance(node, ast.List) or not node.elts:
            return None
        return [_call(item) for item in node.elts]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def pythonic_call(src: str) -> ParsedCall | None:
    """One call ``f(a=1)`` → a call; None when malformed."""
    try:
        return _call(ast.parse(src.strip(), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _call(node: ast.expr) -> ParsedCall:
    if not isinstance(node, ast.Call) or node.args:
        raise _NotLiteral("not a call with keyword arguments only")
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:  # **kwargs
            raise _NotLiteral("** arguments")
        args[kw.arg] = _literal(kw.value)
    return ParsedCall(_dotted(node.func), args)


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _NotLiteral("a call's function must be a (dotted) name")


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | float) and math.isfinite(value):
            return value
    elif isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    elif isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    elif isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):  # {**x}
            raise _NotLiteral("** in a dict")
        keys = [_literal(k) for k in node.keys]  # type: ignore[arg-type]
        if not all(isinstance(k, str) for k in keys):
            raise _NotLiteral("dict keys must be strings")
        return dict(zip(keys, (_literal(v) for v in node.values), strict=True))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise _NotLiteral(f"not a literal: {ast.dump(node)[:60]}")
