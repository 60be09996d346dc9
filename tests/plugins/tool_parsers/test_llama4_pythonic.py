"""llama4_pythonic: a Python list of calls, bare or in ``<|python_start|>`` … ``<|python_end|>``."""

from __future__ import annotations

from heron.testing.tool_parsers import ToolParserCase, check_tool_parser
from heron_plugins.tool_parsers.llama4_pythonic import Llama4PythonicToolParser

CASES = [
    ToolParserCase("no call", "It is sunny.", "It is sunny.", []),
    ToolParserCase("bare list", '[get_weather(city="Lyon")]', None, [("get_weather", {"city": "Lyon"})]),
    ToolParserCase("wrapped, after text", 'Checking.<|python_start|>[a(x=1), b(y="ü")]<|python_end|>', "Checking.",
                   [("a", {"x": 1}), ("b", {"y": "ü"})]),
    ToolParserCase("wrapped then more text", "<|python_start|>[a()]<|python_end|> and done", "and done", [("a", {})]),
    ToolParserCase("nested arguments", "<|python_start|>[f(d={'a': {'b': [None, 1.5]}}, s='\\'q\\'')]<|python_end|>", None,
                   [("f", {"d": {"a": {"b": [None, 1.5]}}, "s": "'q'"})]),
    ToolParserCase("missing end tag is tolerated", "<|python_start|>[f(x=1)]", None, [("f", {"x": 1})]),
    ToolParserCase("truncated wrapped list stays content", "<|python_start|>[f(x=", "<|python_start|>[f(x=", []),
    ToolParserCase("malformed wrapped list stays content", "<|python_start|>[f(x=y)]<|python_end|>",
                   "<|python_start|>[f(x=y)]<|python_end|>", []),
]


def test_conformance(tokenizer):
    check_tool_parser(Llama4PythonicToolParser, tokenizer, CASES)
