"""The ReasoningParser contract: split model output into reasoning and answer content."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from heron.protocol import DeltaMessage

__all__ = ("ReasoningParser",)


class ReasoningParser(ABC):
    """Separates reasoning from content for one request; built once per request.

    The chat pipeline runs it before the tool parser and gives that only the content.
    Like tool parsers, the deltas must join to exactly what ``parse`` returns.
    """

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        """Args:
        tokenizer: the request's HF tokenizer.
        thinking: False when the rendered prompt turned thinking off or already closed the
            think block; the parser then treats all output as content (unless its format
            says otherwise).
        """
        self.tokenizer = tokenizer
        self.thinking = thinking

    @abstractmethod
    def parse(self, text: str) -> tuple[str | None, str | None]:
        """Split a complete output into ``(reasoning, content)``; either may be None."""

    @abstractmethod
    def parse_delta(self, delta_text: str, delta_token_ids: Sequence[int] = ()) -> DeltaMessage | None:
        """Take the next piece of output; return ``reasoning``/``content`` that may be sent now."""

    @abstractmethod
    def finish(self) -> DeltaMessage | None:
        """End of output: flush held-back text."""

    def is_reasoning_end(self, token_ids: Sequence[int]) -> bool:
        """Whether reasoning has ended within ``token_ids`` (the output so far).

        Used to start structured-output constraints once reasoning is over. The default
        decodes the ids and asks :meth:`parse`; formats with an end token override it.
        """
        if not self.thinking:
            return True
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=False)
        _, content = type(self)(self.tokenizer, thinking=True).parse(text)
        return content is not None
