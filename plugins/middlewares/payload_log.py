"""What the ``access_log`` middleware shows of a request's prompt and its generated text.

The prompt comes from the JSON body (``prompt`` of completions, ``messages`` of chat, ``input`` of
responses and embeddings); the output from the answer: a JSON body (chat ``message.content``,
completions ``text``, responses ``output_text``) or a Server-Sent Events stream (their deltas,
joined per choice). Each is cut to ``max_log_len`` characters as vLLM's ``--max-log-len`` does.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ("OutputCollector", "params_of", "prompt_of", "shorten")

#: request fields that carry the prompt (the first present one is logged as the prompt)
PROMPT_FIELDS = ("messages", "prompt", "input")
#: a non-streamed answer larger than this is not parsed for its output
MAX_BODY_BYTES = 32 * 1024 * 1024
#: characters of a request's parameters shown (tools and schemas can be long; --max-log-len is for prompts)
MAX_PARAMS_CHARS = 2000


def shorten(text: str, max_len: int | None, total: int | None = None) -> str:
    """``repr`` of ``text``'s first ``max_len`` characters, saying how many of ``total`` were left out."""
    total = len(text) if total is None else total
    if max_len is None or total <= max_len:
        return repr(text)
    return f"{text[:max_len]!r}... (+{total - max_len} chars)"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def prompt_of(body: Any) -> str | None:
    """The prompt of a request body as text (a string as is, anything else as compact JSON)."""
    if not isinstance(body, dict):
        return None
    for name in PROMPT_FIELDS:
        if name in body:
            return _as_text(body[name])
    return None


def params_of(body: dict[str, Any]) -> str:
    """The request's other fields (sampling parameters, tools, ...) as compact JSON, shortened."""
    text = _as_text({k: v for k, v in body.items() if k not in PROMPT_FIELDS})
    return text if len(text) <= MAX_PARAMS_CHARS else f"{text[:MAX_PARAMS_CHARS]}... (+{len(text) - MAX_PARAMS_CHARS} chars)"


class OutputCollector:
    """Fed the answer's body chunks; :meth:`outputs` gives the generated text per choice.

    Only the first ``max_len`` characters of each choice are kept (all when ``max_len`` is None).
    """

    def __init__(self, max_len: int | None) -> None:
        self.max_len = max_len
        self.stream = False
        self._texts: dict[int, tuple[str, int]] = {}  # choice index -> (its first characters, its length)
        self._buffer = bytearray()
        self._overflow = False

    def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The response headers: an event stream is parsed as it goes, JSON at the end."""
        content_type = dict((k.lower(), v) for k, v in headers).get(b"content-type", b"")
        self.stream = content_type.startswith(b"text/event-stream")

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buffer += chunk
        if self.stream:
            *events, rest = bytes(self._buffer).split(b"\n")
            self._buffer = bytearray(rest)
            for line in events:
                self._event(line.strip())
        elif len(self._buffer) > MAX_BODY_BYTES:
            self._overflow, self._buffer = True, bytearray()

    def outputs(self) -> list[str]:
        """Each choice's generated text, shortened for the log, by index (empty when there was none)."""
        if not self.stream and self._buffer:
            try:
                self._whole(json.loads(bytes(self._buffer)))
            except (ValueError, RecursionError, TypeError):
                pass
            self._buffer = bytearray()
        return [shorten(text, self.max_len, length) for _, (text, length) in sorted(self._texts.items())]

    def _add(self, index: Any, text: Any) -> None:
        if not isinstance(text, str) or not isinstance(index, int):
            return
        have, length = self._texts.get(index, ("", 0))
        if self.max_len is None or len(have) < self.max_len:
            have += text
        self._texts[index] = (have, length + len(text))

    def _event(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        try:
            event = json.loads(line[5:])
        except ValueError:  # "[DONE]"
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "response.output_text.delta":
            self._add(event.get("output_index", 0), event.get("delta"))
        for choice in event.get("choices") or ():
            if isinstance(choice, dict):
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                self._add(choice.get("index", 0), text)

    def _whole(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        for choice in body.get("choices") or ():
            if isinstance(choice, dict):
                message = choice.get("message")
                text = message.get("content") if isinstance(message, dict) else choice.get("text")
                self._add(choice.get("index", 0), text)
        for i, item in enumerate(body.get("output") or ()):
            parts = item.get("content") if isinstance(item, dict) else None
            texts = [p.get("text") for p in parts or () if isinstance(p, dict) and p.get("type") == "output_text"]
            if texts:
                self._add(i, "".join(t for t in texts if isinstance(t, str)))
