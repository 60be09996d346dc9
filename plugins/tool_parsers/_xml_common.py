"""Shared pieces of the XML-like and special-token tool-call formats (DeepSeek, Kimi, GLM, Qwen3-Coder, …).

- :class:`SectionedToolParser`: formats that wrap calls in a section (``<begin>`` call call
  ``<end>``) whose calls are each delimited by their own markers. Each call is its own region, so
  it streams as soon as it closes; the section markers are empty regions (dropped, and the
  whitespace around them with them). A call left open is ended by the next call or section
  marker; one cut by the end of output is kept when ``accept_unclosed`` and its body parses.
- :class:`Until` / :class:`Immediate`: region finders (see :mod:`._regions`).
- :func:`elements` / :func:`attributes`: read runs of ``<tag …>inner</tag>`` elements strictly
  (only whitespace may sit between them), so anything unexpected makes the caller fall back.
- :class:`ToolSchemas` and :func:`convert_value`: turn a parameter's text into the JSON type its
  tool's JSON schema declares (strings stay strings; without a schema a value is a string).
- :func:`loads_strict`: JSON without ``NaN``/``Infinity`` (which would re-serialise as invalid JSON).
"""

from __future__ import annotations

import ast
import json
import math
import re
from abc import abstractmethod
from typing import Any, ClassVar

from heron_plugins.tool_parsers._base import BufferedToolParser, ParsedCall, RegionEnd

__all__ = (
    "Immediate",
    "SectionedToolParser",
    "ToolSchemas",
    "Until",
    "attributes",
    "convert_value",
    "elements",
    "loads_strict",
    "read_invokes",
    "trim_newline",
)


class Immediate:
    """The region is its marker alone (empty body): used for section markers that are dropped."""

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        return (body, body)


class Until:
    """The region ends after the first of ``ends`` or, not consuming it, before the first of ``stops``."""

    def __init__(self, ends: tuple[str, ...], stops: tuple[str, ...] = ()) -> None:
        self.ends, self.stops = ends, stops
        self._longest = max(map(len, ends + stops))
        self._from = -1  # no end or stop starts before this index

    def find(self, text: str, body: int, final: bool) -> tuple[int, int] | None:
        start = max(body, self._from)
        best: tuple[int, int] | None = None
        for marker, consumed in [(m, True) for m in self.ends] + [(m, False) for m in self.stops]:
            j = text.find(marker, start)
            if j >= 0 and (best is None or j < best[0]):
                best = (j, j + len(marker) if consumed else j)
        if best is None:
            self._from = max(body, len(text) - self._longest + 1)
        return best


class SectionedToolParser(BufferedToolParser):
    """Base for ``section_markers`` around ``call_start`` … ``call_end`` calls; implement ``parse_call``."""

    section_markers: ClassVar[tuple[str, ...]] = ()
    call_start: ClassVar[str] = ""
    call_end: ClassVar[str] = ""
    accept_unclosed = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.call_start:
            cls.start_markers = (*cls.section_markers, cls.call_start)
            cls.end_markers = (cls.call_end,)  # informative: region_finder decides

    @abstractmethod
    def parse_call(self, body: str) -> ParsedCall | None:
        """The call between ``call_start`` and ``call_end`` (or None when malformed)."""

    def region_finder(self, marker: str) -> RegionEnd:
        if marker != self.call_start:
            return Immediate()
        return Until((self.call_end,), (self.call_start, *self.section_markers))

    def parse_region(self, marker: str, body: str) -> list[ParsedCall] | None:
        if marker != self.call_start:
            return []
        call = self.parse_call(body)
        return None if call is None else [call]


# -- reading XML-like elements ----------------------------------------------------------------

_ATTR = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


def elements(text: str, open_re: re.Pattern[str], close: str, pos: int = 0) -> list[tuple[re.Match[str], str]] | None:
    """Every ``open … close`` element in ``text[pos:]``, as (opening match, inner text).

    Only whitespace may come before, between and after them; None otherwise (or when an
    element is not closed). Elements do not nest (the first ``close`` ends one).
    """
    found: list[tuple[re.Match[str], str]] = []
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos == n:
            return found
        m = open_re.match(text, pos)
        if m is None:
            return None
        end = text.find(close, m.end())
        if end < 0:
            return None
        found.append((m, text[m.end():end]))
        pos = end + len(close)


def attributes(text: str) -> dict[str, str] | None:
    """``name="v" k='w'`` → a dict; None when anything else is there."""
    attrs: dict[str, str] = {}
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos == n:
            return attrs
        m = _ATTR.match(text, pos)
        if m is None:
            return None
        attrs[m.group(1)] = next(g for g in m.groups()[1:] if g is not None)
        pos = m.end()


def read_invokes(
    text: str,
    invoke: tuple[re.Pattern[str], str],
    param: tuple[re.Pattern[str], str],
    schemas: ToolSchemas,
) -> list[ParsedCall] | None:
    """Calls from ``<invoke name="f"><param name="k">v</param>…</invoke>``-shaped elements.

    ``invoke`` and ``param`` are (opening pattern with the attributes as group 1, closing tag).
    Values lose one newline on each side and are converted with ``schemas``. None when the text
    holds no invoke or anything malformed.
    """
    invokes = elements(text, *invoke)
    if not invokes:
        return None
    calls = []
    for m, inner in invokes:
        head, params = attributes(m.group(1)), elements(inner, *param)
        if not head or not head.get("name") or params is None:
            return None
        raw: dict[str, str] = {}
        for pm, value in params:
            attrs = attributes(pm.group(1))
            if not attrs or "name" not in attrs:
                return None
            raw[attrs["name"]] = trim_newline(value)
        calls.append(ParsedCall(head["name"], schemas.convert(head["name"], raw)))
    return calls


def trim_newline(value: str) -> str:
    """Drop one newline right after the opening tag and one right before the closing tag."""
    if value.startswith("\r\n"):
        value = value[2:]
    elif value.startswith("\n"):
        value = value[1:]
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    return value


# -- values and schemas -----------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def loads_strict(text: str) -> Any:
    """``json.loads`` refusing what would re-serialise as invalid JSON (``NaN``, ``1e999``); ValueError if malformed."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class ToolSchemas:
    """The request's tools, by function name: a parameter's JSON schema."""

    def __init__(self, tools: list[dict] | None) -> None:
        self._params: dict[str, dict[str, Any]] = {}
        for tool in tools or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                props = (fn.get("parameters") or {}).get("properties")
                self._params[fn["name"]] = props if isinstance(props, dict) else {}

    def param(self, function: str, key: str) -> dict[str, Any] | None:
        """The schema of ``function``'s parameter ``key``, or None when the tools do not say."""
        schema = self._params.get(function, {}).get(key)
        return schema if isinstance(schema, dict) else None

    def convert(self, function: str, raw: dict[str, str]) -> dict[str, Any]:
        """Every value of ``raw`` converted with :func:`convert_value` under its schema."""
        return {k: convert_value(v, self.param(function, k)) for k, v in raw.items()}


def schema_types(schema: dict[str, Any]) -> list[str]:
    """The JSON types a schema allows, in the order it names them ([] when it does not say)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    types: list[str] = []
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            if isinstance(sub, dict):
                types += [t for t in schema_types(sub) if t not in types]
    if not types and "properties" in schema:
        types = ["object"]
    if not types and "items" in schema:
        types = ["array"]
    return types


def _as_number(text: str, integer: bool) -> Any:
    value = loads_strict(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        return int(value)
    return value


def _as_container(text: str, kind: type) -> Any:
    try:
        value = loads_strict(text)
    except ValueError:
        value = ast.literal_eval(text)  # Python-style literals ({'a': True}) that models sometimes write
    if not isinstance(value, kind) or not _jsonable(value):
        raise ValueError("wrong type")
    return value


def _as_bool(text: str) -> bool:
    low = text.lower()
    if low not in ("true", "false"):
        raise ValueError("not a boolean")
    return low == "true"


def _as_null(text: str) -> None:
    if text not in ("null", "None"):
        raise ValueError("not null")


_CONVERTERS = {
    "null": _as_null,
    "boolean": _as_bool,
    "integer": lambda s: _as_number(s, True),
    "number": lambda s: _as_number(s, False),
    "object": lambda s: _as_container(s, dict),
    "array": lambda s: _as_container(s, list),
}


def convert_value(raw: str, schema: dict[str, Any] | None) -> Any:
    """A parameter's text as the type its schema declares.

    A string type (or no type known) keeps the text as is, except ``null`` when the schema also
    allows null. Otherwise each declared type is tried in order on the stripped text; when none
    fits, the text is kept as a string rather than failing the call.
    """
    types = schema_types(schema) if schema else []
    text = raw.strip()
    if not types or "string" in types:
        return None if "null" in types and text == "null" else raw
    for kind in types:
        convert = _CONVERTERS.get(kind)
        if convert is None:
            continue
        try:
            value = convert(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        return value
    return raw
