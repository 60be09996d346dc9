"""The request's output constraint: ``response_format``, vLLM's ``structured_outputs`` or ``guided_*``.

Read into ``StructuredOutputsParams`` (a 400 naming the field when it is malformed or when a
request gives several), then compiled before the request is admitted so that an invalid schema,
regex, grammar or structural tag is a 400 too.
"""

from __future__ import annotations

from typing import Any

from heron.protocol.sampling_fields import SamplingFields
from heron.server.errors import APIError
from heron.structured.params import StructuredOutputError

__all__ = ("check_structured", "structured_from_request")

_ALIASES = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar",
            "guided_json_object": "json_object"}


def _from_format(fmt: Any) -> dict[str, Any] | None:
    """``response_format`` as StructuredOutputsParams fields (None: plain text)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"json_object": True}
    if fmt.type == "structural_tag":
        if fmt.format is None and fmt.structures is None:
            raise APIError(400, "response_format type 'structural_tag' needs 'format' (or 'structures' and "
                                "'triggers').", param="response_format")
        return {"structural_tag": fmt.model_dump_json(by_alias=True, exclude_none=True)}
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    if schema is None:
        raise APIError(400, "response_format type 'json_schema' needs 'json_schema.schema'.", param="response_format")
    return {"json": schema}


def structured_from_request(req: SamplingFields) -> tuple[Any, str | None]:
    """The request's output constraint as ``StructuredOutputsParams`` and the field it came from.

    Sources: ``response_format`` (``json_object`` / ``json_schema`` / vLLM's ``structural_tag``),
    vLLM's ``structured_outputs`` and the older ``guided_*`` names. More than one is a 400 naming
    the second.
    """
    from heron.structured import StructuredOutputsParams

    found: list[tuple[str, dict[str, Any]]] = []
    fields = _from_format(req.response_format)
    if fields is not None:
        found.append(("response_format", fields))
    if req.structured_outputs is not None:
        so = req.structured_outputs
        fields = {"json": so.json_, "regex": so.regex, "choice": so.choice, "grammar": so.grammar,
                  "json_object": bool(so.json_object), "structural_tag": so.structural_tag}
        fields = {k: v for k, v in fields.items() if v not in (None, False)}
        fields["disable_any_whitespace"] = so.disable_any_whitespace
        found.append(("structured_outputs", fields))
    for alias, key in _ALIASES.items():
        value = getattr(req, alias, None)
        if value is not None and value is not False:
            found.append((alias, {key: value}))
    if not found:
        return None, None
    if len(found) > 1:
        raise APIError(400, f"Give one output constraint, not several: {', '.join(n for n, _ in found)}.",
                       param=found[1][0])
    param, fields = found[0]
    try:
        return StructuredOutputsParams(**fields), param
    except ValueError as err:
        raise APIError(400, f"Invalid {param}: {err}", param=param) from err


async def check_structured(state: Any, structured: Any, param: str | None) -> None:
    """Compile the constraint now (off the event loop): an invalid one is a 400 naming ``param``,
    and the engine later finds it compiled."""
    compile_grammar = getattr(state.engine, "compile_grammar", None)
    if structured is None or compile_grammar is None:
        return
    try:
        await compile_grammar(structured)
    except StructuredOutputError as err:
        blame = err.param if err.param in ("tools", "tool_choice") else param
        raise APIError(400, str(err), param=blame) from err
