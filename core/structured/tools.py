"""JSON schemas that force tool calls, for ``tool_choice="required"`` and named tool choice.

This is what vLLM does: instead of hoping the model writes its tool-call markup, the server
constrains the output to JSON with one of these schemas (a ``StructuredOutputsParams(json=...)``)
and turns the JSON into ``tool_calls`` itself, whatever the tool-call parser:

- ``tool_choice={"type": "function", "function": {"name": F}}``: the output is F's arguments
  object (:func:`named_tool_schema`); the server answers one call to F with that text as
  ``arguments``.
- ``tool_choice="required"``: the output is a JSON array of ``{"name": ..., "parameters": {...}}``
  (:func:`required_tools_schema`); the server answers one call per item
  (:func:`tool_calls_from_json` gives ``(name, arguments)`` pairs).

Errors blame the ``tool_choice`` / ``tools`` request parameters.
"""

from __future__ import annotations

import json
from typing import Any

from heron.structured.params import StructuredOutputError

__all__ = ("named_tool_schema", "required_tools_schema", "tool_calls_from_json")

_DEFS = ("$defs", "definitions")  # where ``#/$defs/X`` (``#/definitions/X``) references point


def _functions(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Name -> function definition of the ``type: function`` tools (others are skipped)."""
    found: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise StructuredOutputError("A function tool needs a 'function' object.", "tools")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise StructuredOutputError("Every function tool needs a non-empty 'name'.", "tools")
        found[name] = fn
    return found


def _parameters(fn: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters")
    if params is None:
        return {"type": "object"}
    if not isinstance(params, dict):
        raise StructuredOutputError(
            f"The 'parameters' of tool {fn['name']!r} must be a JSON schema object.", "tools"
        )
    return params


def named_tool_schema(tools: list[dict[str, Any]] | None, name: str) -> dict[str, Any]:
    """The schema forcing exactly one call to function ``name``: its arguments object schema
    (the tool's ``parameters``; an object with any properties when it has none).

    Raises:
        StructuredOutputError: ``name`` is not among the function ``tools`` (param "tool_choice").
    """
    functions = _functions(tools)
    if name not in functions:
        known = ", ".join(sorted(functions)) or "none"
        raise StructuredOutputError(
            f"tool_choice names function {name!r}, which is not in 'tools' (known: {known}).",
            "tool_choice",
        )
    return _parameters(functions[name])


def required_tools_schema(
    tools: list[dict[str, Any]] | None, parallel: bool = True
) -> dict[str, Any]:
    """The schema forcing one or more calls to any of ``tools``: a JSON array of
    ``{"name": F, "parameters": <F's arguments>}`` objects (``anyOf`` over the tools), with at
    least one item, and at most one when ``parallel`` (``parallel_tool_calls``) is false.

    The tools' ``$defs`` (and ``definitions``) move to the top level, where their
    ``#/$defs/...`` references point once the parameters are nested in this schema.

    Raises:
        StructuredOutputError: no function tools, or two tools define one ``$defs`` name
            differently (param "tools").
    """
    functions = _functions(tools)
    if not functions:
        raise StructuredOutputError(
            "tool_choice 'required' needs at least one function in 'tools'.", "tool_choice"
        )
    defs: dict[str, dict[str, Any]] = {}
    variants = []
    for name, fn in functions.items():
        params = dict(_parameters(fn))
        for where in _DEFS:
            for key, schema in (params.pop(where, None) or {}).items():
                seen = defs.setdefault(where, {})
                if seen.get(key, schema) != schema:
                    raise StructuredOutputError(
                        f"Tools define '{where}/{key}' differently; give them unique names.",
                        "tools",
                    )
                seen[key] = schema
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"type": "string", "const": name}, "parameters": params},
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "items": variants[0] if len(variants) == 1 else {"anyOf": variants},
        "minItems": 1,
    }
    if not parallel:
        schema["maxItems"] = 1
    schema.update(defs)
    return schema


def tool_calls_from_json(text: str) -> list[tuple[str, str]]:
    """``(name, arguments JSON)`` of each call in output constrained by
    :func:`required_tools_schema`.

    Raises:
        ValueError: ``text`` is not such an array (e.g. output cut by ``max_tokens``).
    """
    calls = json.loads(text)
    if not isinstance(calls, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls
    ):
        raise ValueError("Expected a JSON array of {'name': ..., 'parameters': ...} objects.")
    return [(c["name"], json.dumps(c.get("parameters", {}), ensure_ascii=False)) for c in calls]
