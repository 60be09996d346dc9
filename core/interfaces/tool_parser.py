"""The ToolParser contract: turn model output text into OpenAI tool calls, whole or streamed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from heron.protocol import DeltaMessage, ToolParseResult, make_tool_call_id

__all__ = ("ToolParser",)


class ToolParser(ABC):
    """Reads one request's output for tool calls. Built once per request: it holds stream state.

    Contract (checked by :mod:`heron.testing.tool_parsers` for every registered parser):
    concatenating every delta from ``parse_delta`` and ``finish`` gives exactly what
    ``parse`` returns on the whole text, however the text was chunked; a call's id and name
    are sent once, in its first delta; indexes start at 0 and rise by one; the argument
    fragments of a call join to valid JSON.
    """

    def __init__(self, tokenizer: Any, tools: list[dict] | None = None) -> None:
        """Args:
        tokenizer: the request's HF tokenizer (parsers must also work on text alone).
        tools: the request's ``tools`` list (OpenAI shape), or None.
        """
        self.tokenizer = tokenizer
        self.tools = tools or []

    def adjust_request(self, request: Any) -> Any:
        """Return the chat request, changed if the format needs it; the default changes nothing.

        The server calls it on a throwaway instance (after the reasoning parser's
        ``adjust_request``) before it builds the sampling parameters. A format whose markers are
        special tokens in its model family sets ``request.skip_special_tokens = False``, or the
        detokenizer strips the markers before :meth:`parse_delta` sees them; the server then
        hides the special tokens that no parser consumed from ``content`` and ``reasoning``.

        Args:
            request: the pydantic ``ChatCompletionRequest`` (change it in place or return a copy).
        """
        return request

    def make_call_id(self, index: int, name: str) -> str:
        """The id of the ``index``-th call (named ``name``); formats with their own ids override."""
        return make_tool_call_id()

    @abstractmethod
    def parse(self, text: str) -> ToolParseResult:
        """Parse a complete model output into ``content`` (text outside calls) and ``tool_calls``.

        Malformed calls fall back to content; this never raises on model output.
        """

    @abstractmethod
    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        """Take the next piece of output; return what may be sent now, or None.

        Text that may be the start of a tool-call marker is held back until it is decided.
        ``delta_token_ids`` are the tokens behind ``delta_text`` (an optional fast path).
        """

    @abstractmethod
    def finish(self) -> DeltaMessage | None:
        """End of output: flush whatever was held back (as content or as a final call)."""
