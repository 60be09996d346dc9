"""Conformance kits that plugin authors (and heron itself) run against every plugin.

Model plugins are checked against transformers with :mod:`heron.testing.models` (imported on
its own: it needs torch and transformers).
"""

from heron.testing.reasoning_parsers import (
    NoTokenizerWarning,
    ReasoningCase,
    check_reasoning_parser,
)
from heron.testing.tool_parsers import (
    ToolParserCase,
    ToolStreamChecker,
    check_tool_parser,
    invariant_errors,
)

__all__ = (
    "NoTokenizerWarning",
    "ReasoningCase",
    "ToolParserCase",
    "ToolStreamChecker",
    "check_reasoning_parser",
    "check_tool_parser",
    "invariant_errors",
)
