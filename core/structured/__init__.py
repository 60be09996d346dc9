"""Structured outputs (constrained decoding): constraints, their xgrammar backend, tool schemas.

``StructuredOutputsParams``, ``StructuredLimits`` and the tool schemas are plain Python; ``GrammarBackend``,
``RequestMatcher`` and ``CompiledGrammar`` import xgrammar (about a second), so they load on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heron.structured.limits import StructuredLimits
from heron.structured.params import StructuredOutputError, StructuredOutputsParams
from heron.structured.tools import named_tool_schema, required_tools_schema, tool_calls_from_json

if TYPE_CHECKING:
    from heron.structured.backend import CompiledGrammar, GrammarBackend, RequestMatcher

__all__ = (
    "CompiledGrammar",
    "GrammarBackend",
    "RequestMatcher",
    "StructuredLimits",
    "StructuredOutputError",
    "StructuredOutputsParams",
    "named_tool_schema",
    "required_tools_schema",
    "tool_calls_from_json",
)

_LAZY = ("CompiledGrammar", "GrammarBackend", "RequestMatcher")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'heron.structured' has no attribute {name!r}")
    from heron.structured import backend

    return getattr(backend, name)
