"""Output items and stream events of one response, built from the chat pipeline's deltas.

The chat pipeline (reasoning parser, then tool parser) turns model text into deltas of
reasoning, content and tool calls; :class:`ResponseBuilder` turns those into the Responses API's
output items, in the order the model produced them (a ``reasoning`` item, a ``message`` with one
``output_text`` part, a ``function_call`` per call), and into the stream events OpenAI's SDK
helpers expect: an item is opened (``output_item.added``, ``content_part.added``), grown
(``*.delta``) and closed (``*.done``, ``output_item.done``) before the next one opens. Whole
and streamed answers come from the same builder, so they hold the same output.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from heron.server.responses.convert import item_id

__all__ = ("ResponseBuilder", "TERMINAL_EVENTS")

#: the event that ends a stream, per final status (a cancelled run has none: its stream just ends)
TERMINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete",
                   "failed": "response.failed"}


class ResponseBuilder:
    """One response object (a dict in OpenAI's shape) grown from pipeline deltas.

    Args:
        response: the response object so far (status ``in_progress``, empty ``output``); updated in place.
        events: whether to build stream events (a whole answer needs none).
    """

    def __init__(self, response: dict[str, Any], *, events: bool = True) -> None:
        self.response = response
        self.emit = events
        self.seq = 0
        self.items: list[dict[str, Any]] = response["output"]
        self.open: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # tool-call index -> its item

    def _event(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        if not self.emit:
            return []
        event = {"type": kind, **copy.deepcopy(fields), "sequence_number": self.seq}
        self.seq += 1
        return [event]

    def _where(self, item: dict[str, Any], content: bool = True) -> dict[str, Any]:
        where = {"item_id": item["id"], "output_index": self.items.index(item)}
        return {**where, "content_index": 0} if content else where

    def start(self) -> list[dict[str, Any]]:
        """``response.created`` (``queued`` for a background run) and ``response.in_progress``."""
        created = self._event("response.created", response=self.response)
        self.response["status"] = "in_progress"
        return [*created, *self._event("response.in_progress", response=self.response)]

    def error(self, code: str | None, message: str, param: str | None) -> list[dict[str, Any]]:
        """An ``error`` event (a failure after the stream began; ``response.failed`` follows)."""
        return self._event("error", code=code, message=message, param=param)

    # -- growing ---------------------------------------------------------------------------------

    def feed(self, msg: Any, logprobs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """One pipeline delta (reasoning, then content, then tool calls); ``logprobs`` go with its text."""
        if msg is None:
            return []
        out: list[dict[str, Any]] = []
        if msg.reasoning:
            out += self._reasoning(msg.reasoning)
        if msg.content:
            out += self._text(msg.content, logprobs or [])
        for call in msg.tool_calls or ():
            out += self._call(call)
        return out

    def _reasoning(self, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        item = self.open
        if item is None or item["type"] != "reasoning":
            out += self.close()
            item = {"id": item_id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
            out += self._add(item, {"type": "reasoning_text", "text": ""})
        item["content"][0]["text"] += text
        return out + self._event("response.reasoning_text.delta", **self._where(item), delta=text)

    def _text(self, text: str, logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        item = self.open
        if item is None or item["type"] != "message":
            out += self.close()
            item = {"id": item_id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                    "content": []}
            out += self._add(item, {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        part = item["content"][0]
        part["text"] += text
        part["logprobs"] += logprobs
        return out + self._event("response.output_text.delta", **self._where(item), delta=text, logprobs=logprobs)

    def _call(self, call: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        fn = call.function
        item = self._calls.get(call.index)
        if item is None:
            out += self.close()
            item = {"id": item_id("fc"), "type": "function_call", "call_id": call.id or item_id("call"),
                    "name": (fn.name if fn else None) or "", "arguments": "", "status": "in_progress"}
            self._calls[call.index] = item
            out += self._add(item, None)
        elif fn is not None and fn.name and not item["name"]:
            item["name"] = fn.name
        if fn is not None and fn.arguments:
            item["arguments"] += fn.arguments
            out += self._event("response.function_call_arguments.delta", **self._where(item, content=False),
                               delta=fn.arguments)
        return out

    def _add(self, item: dict[str, Any], part: dict[str, Any] | None) -> list[dict[str, Any]]:
        self.items.append(item)
        self.open = item
        out = self._event("response.output_item.added", output_index=len(self.items) - 1, item=item)
        if part is not None:
            item["content"].append(part)
            out += self._event("response.content_part.added", **self._where(item), part=part)
        return out

    def close(self, status: str = "completed") -> list[dict[str, Any]]:
        """Close the open item (``*.done`` events, then ``output_item.done``)."""
        item, self.open = self.open, None
        if item is None:
            return []
        item["status"] = status
        out: list[dict[str, Any]] = []
        if item["type"] == "function_call":
            out += self._event("response.function_call_arguments.done", **self._where(item, content=False),
                               name=item["name"], arguments=item["arguments"])
        else:
            part = item["content"][0]
            if item["type"] == "message":
                out += self._event("response.output_text.done", **self._where(item), text=part["text"],
                                   logprobs=part["logprobs"])
            else:
                out += self._event("response.reasoning_text.done", **self._where(item), text=part["text"])
            out += self._event("response.content_part.done", **self._where(item), part=part)
        return out + self._event("response.output_item.done", output_index=self.items.index(item), item=item)

    # -- ending ----------------------------------------------------------------------------------

    def finish(self, status: str, *, usage: dict[str, Any] | None = None, reason: str | None = None,
               error: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Close the open item and set the final ``status``; returns the closing events."""
        out = self.close("incomplete" if status in ("incomplete", "cancelled", "failed") else "completed")
        r = self.response
        r["status"] = status
        if usage is not None:
            r["usage"] = usage
        r["error"] = error
        r["incomplete_details"] = {"reason": reason} if status == "incomplete" else None
        r["completed_at"] = int(time.time()) if status == "completed" else None
        if status in TERMINAL_EVENTS:
            out += self._event(TERMINAL_EVENTS[status], response=r)
        return out

    def assistant_message(self) -> dict[str, Any]:
        """The output as one chat message: what a later turn (``previous_response_id``) re-renders."""
        msg: dict[str, Any] = {"role": "assistant", "content": ""}
        reasoning = "".join(i["content"][0]["text"] for i in self.items if i["type"] == "reasoning")
        if reasoning:
            msg["reasoning"] = reasoning
        msg["content"] = "".join(i["content"][0]["text"] for i in self.items if i["type"] == "message")
        calls = [{"id": i["call_id"], "type": "function", "function": {"name": i["name"], "arguments": i["arguments"]}}
                 for i in self.items if i["type"] == "function_call"]
        if calls:
            msg["tool_calls"] = calls
        return msg
