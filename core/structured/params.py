"""What a request constrains its output to: vLLM's ``StructuredOutputsParams``.

Pure Python (no xgrammar import), so the server and ``SamplingParams`` can build and check these
cheaply. Only the shape is checked here (exactly one constraint, right types, the JSON schema is
JSON); whether a regex or grammar is valid is known when :class:`GrammarBackend` compiles it.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any

__all__ = ("StructuredOutputError", "StructuredOutputsParams")

_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
_TOO_DEEP = "The JSON schema is nested too deeply to read; flatten it (use $defs and $ref)."


class StructuredOutputError(ValueError):
    """An invalid schema, regex, choice list or grammar.

    Attributes:
        param: the request parameter to blame in the HTTP 400 error (``response_format``,
            ``structured_outputs``, ``guided_regex``, ``tool_choice``, …).
    """

    def __init__(self, message: str, param: str = "structured_outputs") -> None:
        super().__init__(message)
        self.param = param

    def for_param(self, param: str) -> StructuredOutputError:
        """The same error blaming ``param`` instead (the server knows which field it came from)."""
        return StructuredOutputError(str(self), param)


@dataclass
class StructuredOutputsParams:
    """Exactly one of ``json``, ``regex``, ``choice``, ``grammar``, ``json_object``, ``structural_tag``.

    Attributes:
        json: a JSON schema (dict or JSON text; a pydantic model class is turned into its schema).
        regex: the output fully matches this regular expression.
        choice: the output is exactly one of these strings.
        grammar: an EBNF grammar (xgrammar / GBNF syntax) with a ``root`` rule.
        json_object: any JSON object (OpenAI's ``response_format={"type": "json_object"}``).
        structural_tag: an xgrammar structural tag as JSON text: ``{"type": "structural_tag",
            "format": {...}}``, or the older ``{"structures": [{"begin", "schema", "end"}],
            "triggers": [...]}`` (vLLM's ``response_format`` of type ``structural_tag``).
        disable_any_whitespace: JSON only: no optional whitespace between tokens (compact JSON);
            small models otherwise tend to emit long runs of newlines.
    """

    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool = False
    structural_tag: str | None = None
    disable_any_whitespace: bool = False

    def __post_init__(self) -> None:
        if hasattr(self.json, "model_json_schema"):  # a pydantic model class, as vLLM allows
            self.json = self.json.model_json_schema()
        given = [n for n in _CONSTRAINTS if getattr(self, n) not in (None, False)]
        if len(given) != 1:
            raise StructuredOutputError(
                "Structured outputs take exactly one of json, regex, choice, grammar, json_object, structural_tag; "
                f"got {', '.join(given) or 'none'}."
            )
        if self.json is not None:
            self._check_json()
        if isinstance(self.structural_tag, dict):
            self.structural_tag = _json.dumps(self.structural_tag, ensure_ascii=False)
        for name in ("regex", "grammar", "structural_tag"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise StructuredOutputError(f"Structured outputs '{name}' must be a string.")
        if self.choice is not None:
            if not isinstance(self.choice, list | tuple) or not self.choice:
                raise StructuredOutputError("Structured outputs 'choice' must be a non-empty list.")
            if not all(isinstance(c, str) for c in self.choice):
                raise StructuredOutputError("Structured outputs 'choice' must list strings only.")
            self.choice = list(self.choice)

    def _check_json(self) -> None:
        if isinstance(self.json, str):
            try:
                schema = _json.loads(self.json)
            except RecursionError:
                raise StructuredOutputError(_TOO_DEEP) from None
            except ValueError as e:
                raise StructuredOutputError(f"The JSON schema is not valid JSON: {e}.") from None
        else:
            schema = self.json
        if not isinstance(schema, dict | bool):
            raise StructuredOutputError(
                f"A JSON schema must be a JSON object, not {type(schema).__name__}."
            )
        try:
            _json.dumps(schema)
        except RecursionError:
            raise StructuredOutputError(_TOO_DEEP) from None
        except (TypeError, ValueError) as e:
            raise StructuredOutputError(f"The JSON schema is not JSON-serializable: {e}.") from None

    @property
    def kind(self) -> str:
        """Which constraint is set: ``json``, ``regex``, ``choice``, ``grammar``, ``json_object`` or
        ``structural_tag``."""
        return next(n for n in _CONSTRAINTS if getattr(self, n) not in (None, False))

    def schema_text(self) -> str | None:
        """The JSON schema as compact JSON text (key order kept: it is the generation order)."""
        if self.json is None:
            return None
        schema = _json.loads(self.json) if isinstance(self.json, str) else self.json
        return _json.dumps(schema, separators=(",", ":"), ensure_ascii=False)

    def key(self) -> tuple[str, str, bool]:
        """A hashable cache key of the content: equal keys compile to the same grammar."""
        kind = self.kind
        if kind == "json":
            content = self.schema_text() or ""
        elif kind == "choice":
            content = _json.dumps(self.choice, ensure_ascii=False)
        elif kind == "json_object":
            content = ""
        else:
            content = getattr(self, kind)
        # whitespace only changes JSON grammars; leave it out of the others' keys
        compact = self.disable_any_whitespace and kind in ("json", "json_object")
        return (kind, content, compact)
