"""An example out-of-tree heron plugin: one tool parser and one middleware."""

__all__ = ("BracketToolParser", "header_middleware")

from heron_example_plugin.middleware import header_middleware
from heron_example_plugin.parser import BracketToolParser
