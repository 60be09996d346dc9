"""A Responses request as the chat pipeline's request: input items to messages, tools, formats.

The Responses API is the chat pipeline with another wire shape, so this module translates and
:func:`heron.server.chat_request.prepare_chat` does the rest (template, tool and reasoning parsers,
structured outputs, sampling parameters). Each translation refuses what heron cannot honour with a
400 naming the field (``input[2].content[0]``, ``tools[1]``), and the chat pipeline's own 400s are
renamed to the Responses fields (``messages`` is ``input``, ``max_completion_tokens`` is
``max_output_tokens``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from heron.protocol.chat import ChatCompletionRequest
from heron.protocol.responses import ResponsesRequest
from heron.server.errors import APIError
from heron.server.state import new_id

__all__ = ("Conversation", "chat_request", "check_request", "drop_oldest_turn", "rename_error", "read_input",
           "item_id", "wants_logprobs")

#: ``include`` values heron honours
INCLUDES = frozenset({"message.output_text.logprobs"})
_PARAMS = {"messages": "input", "max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
           "response_format": "text.format", "logprobs": "top_logprobs"}
_TEXT_PARTS = {"input_text", "output_text", "text"}


def item_id(prefix: str) -> str:
    """A server-made item id, OpenAI style: ``msg_<hex>``, ``fc_<hex>``, ``rs_<hex>``."""
    return new_id(prefix).replace("-", "_", 1)


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)


def check_request(req: ResponsesRequest) -> None:
    """Fields heron cannot honour, each a 400 naming it (checked before admission)."""
    if req.prompt is not None:
        raise _bad("prompt", "Prompt templates ('prompt') are stored on OpenAI's side and not supported here; "
                             "send 'instructions' and 'input' instead.")
    if req.conversation is not None:
        raise _bad("conversation", "Conversations are not supported; chain turns with 'previous_response_id'.")
    if req.background and req.store is False:
        raise _bad("background", "'background': true needs 'store': true (a background response is retrieved later).")
    for i, name in enumerate(req.include or []):
        if name not in INCLUDES:
            raise _bad(f"include[{i}]", f"include value {name!r} is not supported; heron supports "
                                         f"{', '.join(sorted(INCLUDES))}.")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
        raise _bad("top_logprobs", f"top_logprobs must be between 0 and 20, got {req.top_logprobs}.")
    if req.max_output_tokens is not None and req.max_output_tokens < 1:
        raise _bad("max_output_tokens", f"max_output_tokens must be at least 1, got {req.max_output_tokens}.")
    if req.max_tool_calls is not None and req.max_tool_calls < 1:
        raise _bad("max_tool_calls", f"max_tool_calls must be at least 1, got {req.max_tool_calls}.")
    reasoning = req.reasoning
    summary = reasoning and (reasoning.summary or reasoning.generate_summary)
    if summary not in (None, "auto"):
        raise _bad("reasoning.summary", f"Reasoning summaries ({summary!r}) are not produced by this server; "
                                        "send null or 'auto' (the reasoning text itself is returned).")
    verbosity = req.text.verbosity if req.text else None
    if verbosity not in (None, "medium"):
        raise _bad("text.verbosity", f"text.verbosity {verbosity!r} is not supported (only 'medium').")
    _check_metadata(req.metadata)
    if (req.stream_options or {}).get("include_obfuscation"):
        raise _bad("stream_options.include_obfuscation", "Stream obfuscation is not supported; leave it off.")
    if req.stream_options is not None and not req.stream:
        raise _bad("stream_options", "'stream_options' is only allowed when 'stream' is true.")
    if isinstance(req.input, str):
        return
    if not req.input and not req.previous_response_id:
        raise _bad("input", "'input' must not be empty.")


def _check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > 16:
        raise _bad("metadata", f"metadata holds at most 16 keys, got {len(metadata)}.")
    for key, value in metadata.items():
        if len(key) > 64:
            raise _bad("metadata", f"metadata keys are at most 64 characters; {key[:20]!r}... has {len(key)}.")
        if not isinstance(value, str) or len(value) > 512:
            raise _bad(f"metadata.{key}", "metadata values are strings of at most 512 characters.")


def wants_logprobs(req: ResponsesRequest) -> bool:
    """Token logprobs go into ``output_text`` parts when asked through ``include`` or ``top_logprobs``."""
    return "message.output_text.logprobs" in (req.include or []) or bool(req.top_logprobs)


@dataclass
class Conversation:
    """This turn's input as chat messages, and as the input items ``input_items`` lists."""

    messages: list[dict[str, Any]]
    items: list[dict[str, Any]]


def _text(content: Any, param: str) -> tuple[str, list[dict[str, Any]]]:
    """Message content (a string or text parts) -> (text, input parts as stored)."""
    if isinstance(content, str):
        return content, [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise _bad(param, "content must be a string or a list of text parts.")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise _bad(f"{param}[{j}]", f"content part of type {kind!r} is not supported by this text-only "
                                        "server; send input_text parts.")
        texts.append(part["text"])
    return "".join(texts), [{"type": "input_text", "text": t} for t in texts]


def _assistant(messages: list[dict[str, Any]], reasoning: list[str]) -> dict[str, Any]:
    """The assistant message a function call joins: the last one if nothing came after it."""
    if messages and messages[-1]["role"] == "assistant" and not reasoning:
        return messages[-1]
    msg: dict[str, Any] = {"role": "assistant", "content": ""}
    if reasoning:
        msg["reasoning"] = "".join(reasoning)
        reasoning.clear()
    messages.append(msg)
    return msg


def read_input(raw: str | list[dict[str, Any]]) -> Conversation:
    """Input items -> chat messages (developer is system; function calls join the assistant turn;
    reasoning goes on the next assistant message) and the stored input items (server ids)."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    messages: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for i, item in enumerate(raw):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(param, "each input item must be an object.")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise _bad(f"{param}.role", f"role must be user, system, developer or assistant, got {role!r}.")
            text, parts = _text(item.get("content"), f"{param}.content")
            if role == "assistant":
                msg = {"role": "assistant", "content": text}
                if reasoning:
                    msg["reasoning"] = "".join(reasoning)
                    reasoning.clear()
                messages.append(msg)
                items.append({"id": item_id("msg"), "type": "message", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
            else:
                messages.append({"role": "system" if role == "developer" else role, "content": text})
                items.append({"id": item_id("msg"), "type": "message", "role": role, "status": "completed",
                              "content": parts})
        elif kind == "function_call":
            call = _function_call(item, param)
            _assistant(messages, reasoning).setdefault("tool_calls", []).append(
                {"id": call["call_id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"]}})
            items.append({"id": item_id("fc"), "type": "function_call", **call, "status": "completed"})
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str):
                raise _bad(f"{param}.call_id", "a function_call_output needs the 'call_id' of its call.")
            text = output if isinstance(output, str) else _text(output, f"{param}.output")[0]
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            items.append({"id": item_id("fco"), "type": "function_call_output", "call_id": call_id, "output": text,
                          "status": "completed"})
        elif kind == "reasoning":
            texts = [p.get("text", "") for p in item.get("content") or [] if isinstance(p, dict)]
            texts = texts or [p.get("text", "") for p in item.get("summary") or [] if isinstance(p, dict)]
            reasoning.append("".join(texts))
            items.append({"id": item_id("rs"), "type": "reasoning", "summary": [],
                          "content": [{"type": "reasoning_text", "text": "".join(texts)}], "status": "completed"})
        else:
            raise _bad(f"{param}.type", f"input items of type {kind!r} are not supported; send messages, "
                                        "function_call, function_call_output or reasoning items.")
    if reasoning:
        messages.append({"role": "assistant", "content": "", "reasoning": "".join(reasoning)})
    return Conversation(messages, items)


def _function_call(item: dict[str, Any], param: str) -> dict[str, str]:
    call = {k: item.get(k) for k in ("call_id", "name", "arguments")}
    for key, value in call.items():
        if not isinstance(value, str):
            raise _bad(f"{param}.{key}", f"a function_call item needs '{key}' as a string.")
    return call  # type: ignore[return-value]


def _tools(req: ResponsesRequest) -> list[dict[str, Any]] | None:
    if req.tools is None:
        return None
    out = []
    for i, tool in enumerate(req.tools):
        if tool.get("type") != "function":
            raise _bad(f"tools[{i}].type", f"tools of type {tool.get('type')!r} are not supported; heron runs "
                                           "function tools only.")
        if not isinstance(tool.get("name"), str):
            raise _bad(f"tools[{i}].name", "a function tool needs a 'name'.")
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out or None


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice", f"tool_choice must be 'none', 'auto', 'required' or {{\"type\": \"function\", "
                              f"\"name\": ...}}, got {json.dumps(choice)[:200]}.")


def _format(req: ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format.schema", "a json_schema format needs its 'schema' object.")
        spec = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        spec.setdefault("name", "response")
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("text.format.type", f"text.format type must be text, json_object or json_schema, got {fmt.get('type')!r}.")


_EXTRAS = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "seed", "stop",
           "stop_token_ids", "ignore_eos", "min_tokens", "logit_bias", "skip_special_tokens",
           "include_stop_str_in_output", "priority", "cache_salt", "chat_template_kwargs", "user")


def chat_request(req: ResponsesRequest, history: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request that renders ``instructions`` + ``history`` and samples as ``req`` asks."""
    messages = ([{"role": "system", "content": req.instructions}] if req.instructions else []) + history
    lp = wants_logprobs(req)
    body: dict[str, Any] = {
        "messages": messages, "model": req.model, "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature, "top_p": req.top_p, "tools": _tools(req),
        "tool_choice": _tool_choice(req.tool_choice) if req.tools else None,
        "parallel_tool_calls": req.parallel_tool_calls is not False, "response_format": _format(req),
        "reasoning_effort": req.reasoning.effort if req.reasoning else None,
        "logprobs": lp, "top_logprobs": (req.top_logprobs or 0) if lp else None,
        **{k: getattr(req, k) for k in _EXTRAS},
    }
    if req.structured_outputs is not None:
        body["structured_outputs"] = req.structured_outputs.model_dump(by_alias=True, exclude_none=True)
    if req.tool_choice is not None and not req.tools and req.tool_choice != "none":
        raise _bad("tool_choice", "'tool_choice' needs 'tools'.")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as err:  # a tool's parameters or a format that is not what chat takes
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise _bad(_PARAMS.get(param.split(".")[0], param), f"Invalid {param}: {first['msg']}.") from None


def rename_error(err: APIError) -> APIError:
    """A chat-pipeline 400 under the Responses field names."""
    if err.param in _PARAMS:
        err.param = _PARAMS[err.param]
        err.message = err.message.replace("max_completion_tokens", "max_output_tokens")
    return err


def drop_oldest_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``truncation: auto``: the conversation without its oldest non-system message (and the tool
    results that answered it); None when nothing is left to drop."""
    keep_head = 0
    while keep_head < len(messages) and messages[keep_head]["role"] == "system":
        keep_head += 1
    if keep_head >= len(messages) - 1:
        return None
    end = keep_head + 1
    while end < len(messages) - 1 and messages[end]["role"] == "tool":
        end += 1
    return messages[:keep_head] + messages[end:]
