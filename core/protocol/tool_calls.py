"""Tool-call and delta message models shared by the parsers and the chat API (OpenAI wire format)."""

from __future__ import annotations

import secrets
import string

from pydantic import BaseModel, ConfigDict, Field

__all__ = (
    "DeltaFunctionCall",
    "DeltaMessage",
    "DeltaToolCall",
    "FunctionCall",
    "ToolCall",
    "ToolParseResult",
    "make_alnum_id",
    "make_tool_call_id",
)

_ALNUM = string.ascii_letters + string.digits


def make_tool_call_id() -> str:
    """The default tool-call id: ``chatcmpl-tool-`` and 32 hex characters."""
    return f"chatcmpl-tool-{secrets.token_hex(16)}"


def make_alnum_id(length: int = 9) -> str:
    """A random id of ``length`` letters and digits (Mistral wants exactly 9)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Model):
    """A complete function call: ``arguments`` is a JSON-encoded object."""

    name: str
    arguments: str = "{}"


class ToolCall(_Model):
    """A complete tool call as it appears in ``message.tool_calls``."""

    id: str = Field(default_factory=make_tool_call_id)
    type: str = "function"
    function: FunctionCall


class DeltaFunctionCall(_Model):
    """A fragment of a function call: ``name`` only in its first delta, ``arguments`` a JSON fragment."""

    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Model):
    """A fragment of the tool call at ``index``; ``id`` and ``type`` only in its first delta."""

    index: int
    id: str | None = None
    type: str | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(_Model):
    """What may be sent to the client now (one streamed ``choices[i].delta``)."""

    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] = Field(default_factory=list)


class ToolParseResult(_Model):
    """A parser's reading of a whole model output: text left over and calls found."""

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)

    @property
    def tools_called(self) -> bool:
        return bool(self.tool_calls)
