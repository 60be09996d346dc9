"""Up-front bounds on structured-output constraints, so compiling one cannot take minutes.

xgrammar compiles in C++ (without the GIL) and a Python thread cannot be interrupted, so the
time a compile may take is bounded before it starts, by the size of what it has to build.
Measured with the SmolLM2 tokenizer (49k tokens) on a 2-core CPU, compile time grows with the
literal text the grammar must spell out (property names, enum/const values, patterns) and,
above all, with the number of *optional* properties (quadratically within one object, and
across the objects an ``anyOf`` unites): 32 Ki characters of random enum values compile in under
1 s, one object with 512 optional string properties in about 2 s and with 1,024 in more than
10 s, an ``anyOf`` of 64 objects with 32 optional array properties each in about 8 s, while a
200,000-value enum takes minutes. At the defaults the worst case measured is about 2.5 s
(32 objects x 32 optional array properties; 16 x 64 likewise). The defaults admit the schemas real clients send (OpenAI's own structured-output limits are in the same range:
5,000 properties, 1,000 enum values, 120,000 characters of names and values).
:attr:`StructuredLimits.compile_timeout_s` is the backstop: a request stops waiting then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from heron.structured.params import StructuredOutputError, StructuredOutputsParams

__all__ = ("StructuredLimits",)


def _literal(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class StructuredLimits:
    """Bounds on one structured-output constraint, checked before it is compiled.

    Attributes:
        max_schema_bytes: size of a JSON schema as compact UTF-8 JSON (descriptions included;
            they cost little to compile, so this mostly bounds parsing and memory).
        max_enum_values: ``enum`` values plus ``const`` values in a schema, or entries of a
            choice list.
        max_properties: object properties declared in a schema, all objects together.
        max_optional_properties: properties that are not ``required``, all objects together.
        max_object_optional_properties: properties of one object that are not ``required``.
        max_literal_chars: characters of text the grammar spells out: property names,
            ``enum``/``const`` values and ``pattern`` regexes of a schema, or a choice list's
            strings.
        max_regex_chars: length of a regex constraint.
        max_grammar_chars: length of an EBNF grammar constraint.
        max_nesting_depth: nesting of objects and arrays in a schema.
        compile_timeout_s: how long a request waits for its grammar to compile.
    """

    max_schema_bytes: int = 1024 * 1024
    max_enum_values: int = 4096
    max_properties: int = 2048
    max_optional_properties: int = 1024
    max_object_optional_properties: int = 64
    max_literal_chars: int = 32 * 1024
    max_regex_chars: int = 16 * 1024
    max_grammar_chars: int = 32 * 1024
    max_nesting_depth: int = 64
    compile_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"StructuredLimits.{name} must be a positive number, got {value!r}.")

    def _over(self, what: str, size: int, limit: str, unit: str) -> StructuredOutputError:
        return StructuredOutputError(
            f"{what} has {size:,} {unit}, over the limit of {getattr(self, limit):,} ({limit}); "
            "simplify it."
        )

    def check(self, params: StructuredOutputsParams) -> None:
        """Raise :class:`StructuredOutputError` (param "structured_outputs") when ``params``
        exceeds a bound; cheap (no xgrammar), so callers may check at admission."""
        kind = params.kind
        if kind == "json":
            self._check_schema(params.schema_text() or "{}")
        elif kind == "regex" and len(params.regex or "") > self.max_regex_chars:
            raise self._over("The regex", len(params.regex or ""), "max_regex_chars", "characters")
        elif kind == "grammar" and len(params.grammar or "") > self.max_grammar_chars:
            raise self._over("The grammar", len(params.grammar or ""), "max_grammar_chars", "characters")
        elif kind == "structural_tag" and len(params.structural_tag or "") > self.max_schema_bytes:
            raise self._over("The structural tag", len(params.structural_tag or ""), "max_schema_bytes", "characters")
        elif kind == "choice":
            choice = params.choice or []
            if len(choice) > self.max_enum_values:
                raise self._over("The choice list", len(choice), "max_enum_values", "entries")
            chars = sum(map(len, choice))
            if chars > self.max_literal_chars:
                raise self._over("The choice list", chars, "max_literal_chars", "characters")

    def _check_schema(self, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > self.max_schema_bytes:
            raise self._over("The JSON schema", size, "max_schema_bytes", "bytes")
        enums = props = chars = optional = 0
        stack: list[tuple[Any, int]] = [(json.loads(text), 1)]
        while stack:  # iterative: a deep schema must not hit Python's recursion limit
            node, level = stack.pop()
            if not isinstance(node, dict | list):
                continue
            if level > self.max_nesting_depth:
                raise self._over("The JSON schema", level, "max_nesting_depth", "levels of nesting")
            if isinstance(node, list):
                stack.extend((v, level + 1) for v in node)
                continue
            if isinstance(node.get("properties"), dict):
                names = node["properties"]
                props += len(names)
                chars += sum(map(len, names))
                required = node.get("required")
                mine = len(set(names) - set(required if isinstance(required, list) else ()))
                optional += mine
                if mine > self.max_object_optional_properties:
                    raise self._over("An object of the JSON schema", mine, "max_object_optional_properties",
                                     "optional properties")
            if isinstance(node.get("enum"), list):
                enums += len(node["enum"])
                chars += sum(map(_literal, node["enum"]))
            if "const" in node:
                enums += 1
                chars += _literal(node["const"])
            if isinstance(node.get("pattern"), str):
                chars += len(node["pattern"])
            stack.extend((v, level + 1) for v in node.values())
        for count, limit, unit in (
            (enums, "max_enum_values", "enum/const values"),
            (props, "max_properties", "properties"),
            (optional, "max_optional_properties", "optional properties"),
            (chars, "max_literal_chars", "characters of property names, enum/const values and patterns"),
        ):
            if count > getattr(self, limit):
                raise self._over("The JSON schema", count, limit, unit)
