"""Cut the schemas the tests check out of OpenAI's published OpenAPI document (run by hand).

The tests validate what heron sends (Responses API objects and events, chat and legacy
completions bodies and stream chunks, the model list) against OpenAI's own schemas, vendored as
``tests/openai_schemas/responses.json.gz``. This script rebuilds that file from a copy of
``openapi.json`` of https://github.com/openai/openai-openapi (OpenAPI 3.1: the schemas are JSON
Schema 2020-12). It keeps the transitive closure of :data:`ROOTS`, rewrites
``#/components/schemas/X`` to ``#/$defs/X`` (and the 2019-09 ``$recursiveRef: "#"`` of the
recursive filters to a ``$ref`` to the schema that declares ``$recursiveAnchor``), drops what
does not validate (descriptions, titles, examples, ``x-*`` extensions, ``discriminator``, which
JSON Schema ignores anyway), reads the OpenAPI 3.0 keyword ``nullable: true`` that some schemas
still carry (chat stream chunks: ``finish_reason``, ``logprobs``, ``usage``) as "or null", as
OpenAI's own API sends those nulls, and records where it came from under ``"source"``::

    python tests/openai_schemas/extract.py /path/to/openapi.json --commit f85dbe2

The output is ``{"source": {...}, "$defs": {name: schema}}``; :mod:`tests.openai_schemas` loads it.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

__all__ = ("ROOTS", "extract", "main")

ROOTS = ("Response", "ResponseStreamEvent", "ResponseItemList", "ItemResource", "Error", "ErrorResponse",
         "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "CreateCompletionResponse",
         "ListModelsResponse", "Model")
PREFIX = "#/components/schemas/"
OUT = Path(__file__).with_name("responses.json.gz")
# keywords whose value is a map of name -> subschema, a list of subschemas, or one subschema
_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems")
_DROP = {"description", "title", "example", "examples", "discriminator", "deprecated", "$recursiveAnchor", "nullable"}


def _clean(schema: Any, owner: str, refs: set[str]) -> Any:
    """A copy of ``schema`` without annotations, refs rewritten; names it refers to go into ``refs``."""
    if not isinstance(schema, dict):
        return schema  # a boolean schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or key.startswith("x-"):
            continue
        if key == "$ref":
            assert value.startswith(PREFIX), value
            refs.add(value[len(PREFIX):])
            out[key] = "#/$defs/" + value[len(PREFIX):]
        elif key == "$recursiveRef":
            assert value == "#", value
            out["$ref"] = "#/$defs/" + owner
        elif key in _MAPS:
            out[key] = {name: _clean(sub, owner, refs) for name, sub in value.items()}
        elif key in _LISTS:
            out[key] = [_clean(sub, owner, refs) for sub in value]
        elif key in _ONE:
            out[key] = _clean(value, owner, refs)
        else:
            out[key] = value  # data: type, enum, const, required, default, bounds, format
    if schema.get("nullable") is True:  # OpenAPI 3.0's "or null", which JSON Schema does not know
        return {"anyOf": [out, {"type": "null"}]}
    return out


def extract(document: dict[str, Any], roots: tuple[str, ...] = ROOTS) -> dict[str, Any]:
    """The cleaned transitive closure of ``roots`` in ``document`` as ``{name: schema}``."""
    schemas = document["components"]["schemas"]
    defs: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in defs:
            continue
        refs: set[str] = set()
        defs[name] = _clean(schemas[name], name, refs)
        todo += sorted(refs - defs.keys())
    return dict(sorted(defs.items()))


def main(argv: list[str] | None = None) -> None:
    """Read the OpenAPI document named on the command line and write :data:`OUT`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("openapi", type=Path, help="openapi.json of github.com/openai/openai-openapi")
    parser.add_argument("--commit", default="f85dbe2", help="the openai-openapi commit the file comes from")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    document = json.loads(args.openapi.read_text())
    bundle = {
        "source": {"repository": "openai/openai-openapi", "commit": args.commit, "file": "openapi.json",
                   "api_version": document["info"]["version"], "roots": list(ROOTS)},
        "$defs": extract(document),
    }
    data = json.dumps(bundle, separators=(",", ":"), sort_keys=True).encode()
    args.out.write_bytes(gzip.compress(data, mtime=0))
    print(f"{args.out}: {len(bundle['$defs'])} schemas, {len(data)} bytes of JSON")


if __name__ == "__main__":
    main()
