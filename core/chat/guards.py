"""Size checks run before a template operation that could build something big.

Each check estimates the size of the result from its inputs (cheaply: lengths, widths, counts)
and asks the active :class:`~heron.chat.budget.Budget` before the operation runs, so
``'a' * 10**9`` or ``'a'.ljust(10**9)`` is refused without allocating anything. The checks
cover operators (``*``, ``+``, ``**``, ``%``), the ``str`` methods that can grow a string, and
the built-in filters that can (``center``, ``indent``, ``wordwrap``, ``join``, ``replace``,
``format``, ``batch``, ``slice``, ``sum``, ``tojson``). Results are checked again afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from heron.chat.budget import MAX_INT_DIGITS, Budget, TemplateLimitError

__all__ = ("FILTER_CHECKS", "check_binop", "check_str_method", "json_size_bound")

_SEQ = (str, list, tuple)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _percent(b: Budget, fmt: str, args: Any) -> None:
    """``fmt % args``: the widths and precisions it asks for (``*`` takes them from args)."""
    values = args if isinstance(args, tuple) else (args,)
    star = max((v for v in values if _int(v) is not None), default=0)
    total = len(fmt) + sum(len(str(v)) for v in values if isinstance(v, str))
    for width, prec in _PRINTF.findall(fmt):
        for num in (width, prec):
            total += star if num == "*" else int(num) if num else 0
    b.chars(total, "A '%' format")


def _format(b: Budget, fmt: str, args: tuple, kwargs: dict) -> None:
    """``fmt.format(...)``: the widths in its replacement fields (nested ones come from args)."""
    total = len(fmt) + sum(len(v) for v in (*args, *kwargs.values()) if isinstance(v, str))
    for field in _FIELD.findall(fmt):
        spec = field[1:-1].partition(":")[2]
        total += sum(int(n) for n in re.findall(r"\d+", spec))
        if "{" in spec:
            total += max((v for v in (*args, *kwargs.values()) if _int(v) is not None), default=0)
    b.chars(total, "A format() call")


def check_binop(b: Budget, op: str, left: Any, right: Any) -> None:
    """Refuse ``left op right`` when its result would exceed the budget."""
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, _SEQ) and _int(n) is not None:
                b.size(seq, len(seq) * n, f"Repeating a {type(seq).__name__} {n:,} times")
    elif op == "+":
        if isinstance(left, _SEQ) and isinstance(right, _SEQ):
            n = len(left) + len(right)
            if n > b.max_items:  # cheap pre-filter: max_items <= max_chars
                b.size(left, n, "A concatenation")
    elif op == "**":
        base, exp = _int(left), _int(right)
        if base is not None and exp is not None and abs(base) > 1 and exp > 0:
            digits = exp * math.log10(abs(base))
            if digits > MAX_INT_DIGITS:
                raise TemplateLimitError(
                    f"{base} ** {exp} would have about {digits:,.0f} digits, over the chat "
                    f"template integer limit ({MAX_INT_DIGITS:,} digits)."
                )
    elif op == "%" and isinstance(left, str):
        _percent(b, left, right)


def _replace_size(s: str, old: str, new: str, count: Any) -> int:
    hits = s.count(old) if old else len(s) + 1
    if _int(count) is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * (len(new) - len(old))


def _translate_size(s: str, table: Any) -> int:
    values = table.values() if isinstance(table, dict) else table if isinstance(table, list | tuple) else ()
    widest = max((len(v) for v in values if isinstance(v, str)), default=1)
    return len(s) * max(1, widest)


def check_str_method(b: Budget, s: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """Refuse ``s.name(*args, **kwargs)`` when it would exceed the budget; returns the args to
    call with (an iterable given to ``join`` is materialized once, to measure it)."""
    first = args[0] if args else None
    what = f"str.{name}()"
    if name in ("ljust", "rjust", "center", "zfill") and _int(first) is not None:
        b.chars(max(len(s), first), what)
    elif name == "expandtabs":
        size = kwargs.get("tabsize", first if args else 8)
        b.chars(len(s) + s.count("\t") * max(0, _int(size) or 0), what)
    elif name == "replace" and len(args) >= 2 and isinstance(first, str) and isinstance(args[1], str):
        b.chars(_replace_size(s, first, args[1], args[2] if len(args) > 2 else kwargs.get("count", -1)), what)
    elif name == "join" and args:
        items = list(first)
        b.items(len(items), what)
        strs = sum(len(x) for x in items if isinstance(x, str))
        b.chars(strs + max(0, len(items) - 1) * len(s), what)
        args = (items, *args[1:])
    elif name in ("format", "format_map"):
        mapping = first if name == "format_map" and isinstance(first, dict) else kwargs
        _format(b, s, args if name == "format" else (), mapping)
    elif name == "translate" and args:
        b.chars(_translate_size(s, first), what)
    return args


def json_size_bound(value: Any, indent: Any, tick: Callable[[], None] | None = None) -> int:
    """An upper bound of ``len(json.dumps(value, indent=indent))`` without building it:
    every scalar and bracket on its own line, indented to the deepest level. ``tick`` is
    called every 4096 values (the render deadline)."""
    per = len(indent) if isinstance(indent, str) else max(0, _int(indent) or 0)
    nodes, chars, depth, stack = 0, 0, 0, [(value, 1)]
    while stack:  # iterative: deep data must not hit the recursion limit here
        item, level = stack.pop()
        nodes += 1
        if tick is not None and not nodes & 4095:
            tick()
        depth = max(depth, level)
        if isinstance(item, dict):
            chars += sum(len(str(k)) + 4 for k in item)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, level + 1) for v in item)
        else:
            chars += 2 * len(str(item)) + 2  # escapes at most double a string (\uXXXX is rarer)
    return chars + 2 * nodes * (3 + depth * per)


# -- filters: each gets (budget, filter args without the jinja pass-arg, kwargs) -------------


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _center(b: Budget, a: tuple, k: dict) -> tuple:
    width = _arg(a, k, 1, "width", 80)
    if _int(width) is not None:
        b.chars(width, "The center filter")
    return a


def _indent(b: Budget, a: tuple, k: dict) -> tuple:
    s, width = str(a[0]), _arg(a, k, 1, "width", 4)
    per = len(width) if isinstance(width, str) else max(0, _int(width) or 0)
    b.chars(len(s) + (s.count("\n") + 1) * per, "The indent filter")
    return a


def _wordwrap(b: Budget, a: tuple, k: dict) -> tuple:
    s, width = str(a[0]), _int(_arg(a, k, 1, "width", 79)) or 1
    wrap = _arg(a, k, 3, "wrapstring", None) or "\n"
    b.chars(len(s) + (len(s) // max(1, width) + s.count("\n") + 1) * len(str(wrap)), "The wordwrap filter")
    return a


def _join(b: Budget, a: tuple, k: dict) -> tuple:
    items = list(a[0])
    sep = str(_arg(a, k, 1, "d", ""))
    b.items(len(items), "The join filter")
    b.chars(sum(len(x) for x in items if isinstance(x, str)) + max(0, len(items) - 1) * len(sep), "The join filter")
    return (items, *a[1:])


def _replace(b: Budget, a: tuple, k: dict) -> tuple:
    if len(a) >= 3:
        b.chars(_replace_size(str(a[0]), str(a[1]), str(a[2]), _arg(a, k, 3, "count", None)), "The replace filter")
    return a


def _format_filter(b: Budget, a: tuple, k: dict) -> tuple:
    if a and isinstance(a[0], str):
        _percent(b, a[0], k if k else tuple(a[1:]))
    return a


def _batch(b: Budget, a: tuple, k: dict) -> tuple:
    count = _int(_arg(a, k, 1, "linecount", 0))
    if count is not None and _arg(a, k, 2, "fill_with", None) is not None:
        b.items(count, "The batch filter")
    return a


def _slice(b: Budget, a: tuple, k: dict) -> tuple:
    count = _int(_arg(a, k, 1, "slices", 0))
    if count is not None:
        b.items(count, "The slice filter")
    return a


def _sum(b: Budget, a: tuple, k: dict) -> tuple:
    start = _arg(a, k, 2, "start", 0)
    if not isinstance(start, _SEQ):
        return a
    items = list(a[0])
    attr = _arg(a, k, 1, "attribute", None)
    parts = [x.get(attr) if attr is not None and isinstance(x, dict) else x for x in items]
    b.size(start, len(start) + sum(len(x) for x in parts if isinstance(x, _SEQ)), "The sum filter")
    return (items, *a[1:])


def _tojson(b: Budget, a: tuple, k: dict) -> tuple:
    indent = _arg(a, k, 1, "indent", None)
    if indent:
        b.chars(json_size_bound(a[0], indent, b.tick), "The tojson filter")
    return a


def _escape(b: Budget, a: tuple, k: dict) -> tuple:
    s = str(a[0])
    b.chars(len(s) + 5 * sum(s.count(c) for c in "&<>\"'"), "HTML escaping")  # '&#34;' is 5 longer
    return a


def _lipsum(b: Budget, a: tuple, k: dict) -> tuple:
    n, most = _int(_arg(a, k, 0, "n", 5)), _int(_arg(a, k, 3, "max", 100))
    if n is not None and most is not None:
        b.chars(max(0, n) * max(0, most) * 16, "lipsum()")  # words of at most 15 letters + space
    return a


#: filter name -> pre-check (filters not listed are only checked afterwards)
FILTER_CHECKS: dict[str, Callable[[Budget, tuple, dict], tuple]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "join": _join,
    "replace": _replace,
    "format": _format_filter,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "tojson": _tojson,
    "escape": _escape,
    "e": _escape,
    "forceescape": _escape,
    "lipsum": _lipsum,  # a global, guarded like the filters
}
