"""OpenAI's published schemas, vendored, and a validator with readable errors.

``responses.json.gz`` holds the schemas the tests check (``Response``, ``ResponseStreamEvent``,
``ResponseItemList``, ``ItemResource``, ``Error``, ``ErrorResponse``,
``CreateChatCompletionResponse``, ``CreateChatCompletionStreamResponse``,
``CreateCompletionResponse``, ``ListModelsResponse``, ``Model`` and all they refer to), cut out of
OpenAI's OpenAPI document by ``extract.py`` (its docstring says how to refresh them; ``SOURCE``
says from which commit). They are JSON Schema 2020-12 and are checked with
``jsonschema``'s ``Draft202012Validator``. The document's unions are ``oneOf``/``anyOf`` with a
``discriminator`` that JSON Schema ignores; its branches differ by their ``type`` enum, so a
failing union is reported through the branch whose ``type`` matches the object.

The document gives the legacy completions one schema for bodies and stream chunks and types
every ``finish_reason`` and ``token_logprobs`` entry as non-null, yet OpenAI's API itself sends
``finish_reason: null`` in every chunk but a choice's last, and a null logprob (and null
``top_logprobs`` entry) for the first token of an echoed prompt, which nothing precedes.
:data:`DERIVED` adds the two schemas that say exactly that and nothing more:
``CompletionEcho`` (a body whose choices may start with that null) and ``CompletionChunk`` (a
chunk: also ``finish_reason`` may be null).
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

__all__ = ("DERIVED", "SCHEMA_NAMES", "SOURCE", "validate", "validate_event")

_BUNDLE = json.loads(gzip.decompress((Path(__file__).parent / "responses.json.gz").read_bytes()))
SOURCE: dict[str, Any] = _BUNDLE["source"]
SCHEMA_NAMES: tuple[str, ...] = tuple(_BUNDLE["$defs"])


def _completion_variant(*, chunk: bool) -> dict[str, Any]:
    """``CreateCompletionResponse`` where a choice's first logprob may be null (echo), and with
    ``chunk`` its ``finish_reason`` too (a stream chunk before the choice's last)."""
    schema = copy.deepcopy(_BUNDLE["$defs"]["CreateCompletionResponse"])
    choice = schema["properties"]["choices"]["items"]
    logprobs = choice["properties"]["logprobs"]["anyOf"][0]["properties"]
    for name in ("token_logprobs", "top_logprobs"):
        item = logprobs[name].pop("items")
        logprobs[name]["prefixItems"] = [{"anyOf": [item, {"type": "null"}]}]  # only the first
        logprobs[name]["items"] = item
    if chunk:
        choice["properties"]["finish_reason"] = {"anyOf": [choice["properties"]["finish_reason"], {"type": "null"}]}
    return schema


#: schemas derived from the vendored ones where OpenAI's document and OpenAI's API disagree
DERIVED: dict[str, dict[str, Any]] = {
    "CompletionEcho": _completion_variant(chunk=False),
    "CompletionChunk": _completion_variant(chunk=True),
}


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    if schema_name not in _BUNDLE["$defs"] and schema_name not in DERIVED:
        raise KeyError(f"no vendored schema {schema_name!r}; rerun extract.py with it among the roots")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": {**_BUNDLE["$defs"], **DERIVED},
              "$ref": f"#/$defs/{schema_name}"}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _where(error: ValidationError) -> str:
    return "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "<root>"


def _is_type_mismatch(error: ValidationError) -> bool:
    """True when ``error`` says the object's ``type`` is not the one this branch describes."""
    return list(error.relative_path) == ["type"] and error.validator in ("enum", "const")


def _branches(error: ValidationError) -> dict[int, list[ValidationError]]:
    """The errors of each branch of a failed ``oneOf``/``anyOf``, by branch index."""
    out: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        out.setdefault(sub.relative_schema_path[0], []).append(sub)
    return out


def _explain(errors: Iterable[ValidationError], depth: int = 0) -> list[str]:
    """One line per leaf error, descending into the union branch that matches the object's type."""
    lines: list[str] = []
    pad = "  " * depth
    for error in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        if error.validator not in ("oneOf", "anyOf") or not error.context:
            lines.append(f"{pad}at {_where(error)}: {error.message}")
            continue
        branches = _branches(error)
        candidates = [errs for errs in branches.values() if not any(_is_type_mismatch(e) for e in errs)]
        kind = error.instance.get("type") if isinstance(error.instance, dict) else None
        if not candidates:
            lines.append(f"{pad}at {_where(error)}: no {error.validator} branch has type {kind!r}")
        else:
            lines.append(f"{pad}at {_where(error)}: the {kind or 'value'} does not match its schema:")
            for errs in candidates[:3]:
                lines += _explain(errs, depth + 1)
    return lines


def validate(obj: Any, schema_name: str) -> None:
    """Check ``obj`` (decoded JSON) against OpenAI's schema ``schema_name``.

    Args:
        obj: the JSON value, e.g. ``response.json()`` of a heron answer.
        schema_name: a name in :data:`SCHEMA_NAMES` or :data:`DERIVED`, e.g. ``"Response"``.

    Raises:
        AssertionError: listing each violation with its JSON path.
    """
    errors = list(_validator(schema_name).iter_errors(obj))
    if errors:
        text = json.dumps(obj)
        shown = text if len(text) <= 2000 else text[:2000] + "..."
        raise AssertionError(f"not a valid OpenAI {schema_name}:\n" + "\n".join(_explain(errors)) + f"\nobject: {shown}")


def validate_event(event: Any) -> None:
    """Check one decoded stream event (the JSON of an SSE ``data:`` line) against ``ResponseStreamEvent``."""
    assert isinstance(event, dict) and isinstance(event.get("type"), str), f"a stream event needs a type: {event!r}"
    validate(event, "ResponseStreamEvent")
