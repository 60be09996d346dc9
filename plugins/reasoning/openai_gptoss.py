"""gpt-oss (OpenAI Harmony): the ``analysis`` channel is reasoning, ``final`` is content.

Harmony output is a run of messages ``[<|start|>ROLE]<|channel|>HEADER<|message|>BODY`` each
closed by ``<|end|>``, ``<|return|>`` or ``<|call|>`` (or cut off). This parser reads it so:

- ``analysis`` body → reasoning; ``final`` body (or a body with no channel) → content; their
  headers, ``<|start|>assistant`` and closing markers are dropped;
- any other message (``commentary`` tool calls and preambles, or a header naming a recipient
  with ``to=``) is left in the content verbatim, markers included, for the ``openai`` tool parser;
- text outside any message is content.

The ``thinking`` flag is ignored: Harmony always labels its channels, so reasoning can be told
apart even when the request asked for low effort. Reasoning counts as ended once a non-analysis
message has begun or any content has been produced.
"""

from __future__ import annotations

import re
from typing import Any

from heron_plugins.reasoning._base import Pieces, StreamingReasoningParser
from heron_plugins.reasoning._markers import find_marker
from heron_plugins.reasoning._special import KeepsSpecialTokens

__all__ = ("GptOssReasoningParser",)

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
CLOSERS = ("<|end|>", "<|return|>", "<|call|>")
_CHANNEL_NAME = re.compile(r"\s*([A-Za-z_]+)")


class GptOssReasoningParser(KeepsSpecialTokens, StreamingReasoningParser):
    """Harmony channels → reasoning / content; other messages pass through verbatim."""

    honours_thinking = False

    def __init__(self, tokenizer: Any, *, thinking: bool = True) -> None:
        super().__init__(tokenizer, thinking=thinking)
        self._state = "outside"  # outside | role | header | body
        self._kind = "content"  # body kind: reasoning | content | raw
        self._head = ""  # role or header text read so far
        self._held = ""
        self._content_seen = False

    def _step(self, text: str, final: bool) -> Pieces:
        self._held += text
        reasoning: list[str] = []
        content: list[str] = []
        while True:
            buf = self._held
            if self._state == "outside":
                at, marker = find_marker(buf, (START, CHANNEL), final=final)
                content.append(buf[:at])
                if marker is None:
                    self._held = buf[at:]
                    break
                self._state, self._head = ("role" if marker == START else "header"), ""
                self._held = buf[at + len(marker) :]
            elif self._state in ("role", "header"):
                ends = (CHANNEL, MESSAGE) if self._state == "role" else (MESSAGE,)
                at, marker = find_marker(buf, ends, final=final)
                self._head += buf[:at]
                self._held = buf[at:]
                if marker is None:
                    if final:  # cut off inside a header: give it back as written
                        content.append((START if self._state == "role" else CHANNEL) + self._head)
                    break
                self._held = buf[at + len(marker) :]
                if self._state == "role":
                    self._end_role(marker, content)
                else:
                    self._open_body(content)
            else:
                at, marker = find_marker(buf, (*CLOSERS, START, CHANNEL), final=final)
                (reasoning if self._kind == "reasoning" else content).append(buf[:at])
                if marker is None:
                    self._held = buf[at:]
                    break
                if marker in CLOSERS:
                    if self._kind == "raw":
                        content.append(marker)
                    at += len(marker)
                self._held, self._state = buf[at:], "outside"
        if final:
            self._held = ""
        self._content_seen = self._content_seen or any(content)
        return reasoning, content

    def _end_role(self, marker: str, content: list[str]) -> None:
        role, self._head = self._head, ""
        raw = role.strip() != "assistant"
        if raw:
            content.append(START + role)
        if marker == CHANNEL:
            self._state = "header"
        else:
            self._state, self._kind = "body", "raw" if raw else "content"
            if raw:
                content.append(MESSAGE)

    def _open_body(self, content: list[str]) -> None:
        header, self._head = self._head, ""
        name = _CHANNEL_NAME.match(header)
        channel = name.group(1) if name and "to=" not in header else ""
        self._state = "body"
        self._kind = {"analysis": "reasoning", "final": "content"}.get(channel, "raw")
        if self._kind == "raw":
            content.append(CHANNEL + header + MESSAGE)

    def _reasoning_over(self) -> bool:
        return self._content_seen or (self._state == "body" and self._kind != "reasoning")
