"""What a chat request turns into before it reaches the engine: prompt, parameters, parsers.

:func:`prepare_chat` runs in a worker thread (rendering a template and tokenizing a long
conversation take real time): it resolves ``tool_choice`` into a parser and/or an output
constraint, lets the parsers adjust the request (formats whose markers are special tokens need
them kept), renders the template within its limits, tokenizes and builds ``SamplingParams``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heron.chat import (
    ChatTemplateError,
    ChoicePipeline,
    normalize_messages,
    normalize_tools,
    render_chat,
    resolve_content_format,
    special_token_texts,
)
from heron.chat.tool_choice import NamedToolCallParser, RequiredToolCallsParser
from heron.plugins import registry
from heron.protocol.chat import ChatCompletionRequest
from heron.server.errors import APIError
from heron.server.sampling import build_sampling_params, structured_from_request, truncate_prompt
from heron.server.state import ServerState
from heron.structured import (
    StructuredOutputError,
    StructuredOutputsParams,
    named_tool_schema,
    required_tools_schema,
)

__all__ = ("PreparedChat", "prepare_chat")


@dataclass
class PreparedChat:
    """A chat request ready to submit: prompt, sampling params and how to parse each choice."""

    prompt_ids: list[int]
    params: Any
    structured: Any = None  # StructuredOutputsParams, compiled before generating
    structured_param: str | None = None
    tool_parser: Callable[[], Any] | None = None
    reasoning_parser: Callable[[], Any] | None = None
    max_calls: int | None = None
    hidden_tokens: frozenset[str] = field(default_factory=frozenset)
    #: chat ``echo``: the final assistant message the answer continues, sent before it
    echo: str = ""
    #: the answer's role: ``--response-role``, or the last message's with add_generation_prompt off
    role: str = "assistant"

    def pipeline(self) -> ChoicePipeline:
        """A fresh parse pipeline for one choice (parsers hold per-choice state)."""
        return ChoicePipeline(self.reasoning_parser() if self.reasoning_parser else None,
                              self.tool_parser() if self.tool_parser else None, max_calls=self.max_calls,
                              hidden_tokens=self.hidden_tokens)


def _tool_setup(state: ServerState, req: ChatCompletionRequest, tools: list[dict] | None, structured: Any,
                structured_param: str | None) -> tuple[Any, str | None, Callable[[], Any] | None]:
    """tool_choice -> (constraint, its param, tool-parser factory).

    Forced calls are decoded as compact JSON (no free whitespace): small models otherwise tend to
    fill the budget with newlines between JSON tokens.
    """
    s = state.settings
    tok = state.engine.tokenizer
    if not tools:
        return structured, structured_param, None
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    if choice == "none":
        return structured, structured_param, None
    if choice == "auto":
        if not (s.enable_auto_tool_choice and s.tool_call_parser):
            raise APIError(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set.',
                           param="tool_choice")
        cls = registry("tool_parsers").load(s.tool_call_parser)
        return structured, structured_param, lambda: cls(tok, tools)
    if structured is not None:
        raise APIError(400, f"tool_choice {choice!r} cannot be combined with {structured_param}.", param="tool_choice")
    try:
        if choice == "required":
            schema = required_tools_schema(tools, parallel=req.parallel_tool_calls)
            return (StructuredOutputsParams(json=schema, disable_any_whitespace=True), "tool_choice",
                    lambda: RequiredToolCallsParser(tok, tools))
        if isinstance(choice, dict) and choice.get("type", "function") == "function":
            name = (choice.get("function") or {}).get("name")
            if not isinstance(name, str):
                raise APIError(400, "tool_choice must name a function: {\"type\": \"function\", "
                                    "\"function\": {\"name\": ...}}.", param="tool_choice")
            schema = named_tool_schema(tools, name)
            return (StructuredOutputsParams(json=schema, disable_any_whitespace=True), "tool_choice",
                    lambda: NamedToolCallParser(tok, tools, name=name))
    except StructuredOutputError as err:
        raise APIError(400, str(err), param=err.param) from err
    raise APIError(400, f"tool_choice must be 'none', 'auto', 'required' or a named function, got {choice!r}.",
                   param="tool_choice")


def _thinking(cls: Any, prompt: str, kwargs: dict[str, Any]) -> bool:
    """Whether the model will think: the template kwargs say so, and the prompt has not closed
    the think block already (templates do that when thinking is off)."""
    decide = getattr(cls, "thinking_from_kwargs", None)
    if decide is not None:
        thinking = decide(kwargs)
    else:
        thinking = not any(kwargs.get(k) is False for k in ("enable_thinking", "thinking"))
    tail = prompt.rstrip()
    if any(tail.endswith(end) for end in getattr(cls, "ends", ()) or ()):
        thinking = False
    return thinking


def _check_request(state: ServerState, req: ChatCompletionRequest) -> None:
    if not req.messages:
        raise APIError(400, "'messages' must contain at least one message.", param="messages")
    if req.tool_choice is not None and not req.tools:
        raise APIError(400, "'tool_choice' is only allowed when 'tools' are given.", param="tool_choice")
    if req.tools is not None and not req.tools:
        raise APIError(400, "'tools' must not be empty; omit it instead.", param="tools")
    if req.chat_template is not None and not state.settings.trust_request_chat_template:
        raise APIError(400, "Request chat templates are refused unless the server runs with "
                            "--trust-request-chat-template.", param="chat_template")
    if req.top_logprobs and not req.logprobs:  # 0 without logprobs is harmless, as in vLLM
        raise APIError(400, "'top_logprobs' requires 'logprobs': true.", param="top_logprobs")
    if req.max_completion_tokens is not None and req.max_completion_tokens < 1:
        raise APIError(400, f"max_completion_tokens must be at least 1, got {req.max_completion_tokens}.",
                       param="max_completion_tokens")


def _tools(state: ServerState, req: ChatCompletionRequest) -> list[dict] | None:
    if not req.tools:
        return None
    raw = [t.model_dump(exclude_none=True) for t in req.tools]
    size = len(json.dumps(raw))
    if size > state.settings.max_tools_bytes:
        raise APIError(400, f"The tools' definitions ({size} bytes as JSON) exceed this server's limit of "
                            f"{state.settings.max_tools_bytes} bytes (--max-tools-bytes).", param="tools",
                       code="limit_exceeded")
    try:
        return normalize_tools(raw)
    except ValueError as err:
        raise APIError(400, str(err), param="tools") from err


def _adjust_for_parsers(req: ChatCompletionRequest, reasoning: Any, tool: Any) -> tuple[ChatCompletionRequest, bool]:
    """Let the parsers change the request (reasoning first); returns it and whether special
    tokens must be hidden from the answer (a parser kept them, the client did not ask to)."""
    client_keeps = req.skip_special_tokens is False
    for make in (reasoning, tool):
        if make is not None:
            req = make().adjust_request(req)
    return req, (req.skip_special_tokens is False and not client_keeps)


def _template_kwargs(state: ServerState, req: ChatCompletionRequest) -> dict[str, Any]:
    """Server defaults, then the request's ``chat_template_kwargs``, then (where those did not
    set them) vLLM's top-level ``reasoning_effort``, ``enable_thinking`` from it, and ``documents``."""
    kwargs = {**state.settings.default_chat_template_kwargs, **(req.chat_template_kwargs or {})}
    if req.reasoning_effort is not None:
        kwargs.setdefault("reasoning_effort", req.reasoning_effort)
        if "enable_thinking" not in (req.chat_template_kwargs or {}):
            kwargs["enable_thinking"] = req.reasoning_effort != "none"
    if req.documents is not None:
        kwargs.setdefault("documents", req.documents)
    return kwargs


def _render(state: ServerState, req: ChatCompletionRequest, template: str, tools: list[dict] | None,
            kwargs: dict[str, Any]) -> str:
    """The prompt text; messages reach the template as ``--chat-template-content-format`` says,
    and tools not at all with ``tool_choice: "none"`` under ``--exclude-tools-when-tool-choice-none``."""
    s, tok = state.settings, state.engine.tokenizer
    if s.exclude_tools_when_tool_choice_none and req.tool_choice == "none":
        tools = None
    fmt = resolve_content_format(template, s.chat_template_content_format)
    try:
        messages = normalize_messages([m.model_dump(exclude_none=True) for m in req.messages], fmt)
        return render_chat(
            template, messages, tools=tools, add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            special_tokens={"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""},
            limits=state.render_limits, **kwargs,
        )
    except (ChatTemplateError, ValueError) as err:
        param = "chat_template" if req.chat_template is not None else "messages"
        raise APIError(400, str(err), param=param) from err


def _echo(req: ChatCompletionRequest, role: str) -> str:
    """Chat ``echo``: the last message's text when it has the answer's role (the answer continues it)."""
    last = req.messages[-1]
    if not req.echo or last.role != role or last.content is None:
        return ""
    if isinstance(last.content, str):
        return last.content
    return "\n".join(p.get("text", "") for p in last.content if isinstance(p, dict))


def prepare_chat(state: ServerState, req: ChatCompletionRequest) -> PreparedChat:
    """Everything between the parsed body and the engine; raises APIError (400) naming the field."""
    s = state.settings
    _check_request(state, req)
    structured, structured_param = structured_from_request(req)
    tools = _tools(state, req)
    structured, structured_param, tool_parser = _tool_setup(state, req, tools, structured, structured_param)
    template = req.chat_template if req.chat_template is not None else state.chat_template
    if not template:
        raise APIError(400, "The model has no chat template; start the server with --chat-template.",
                       param="messages")
    tok = state.engine.tokenizer
    kwargs = _template_kwargs(state, req)
    text = _render(state, req, template, tools, kwargs)
    ids = tok.encode(text, add_special_tokens=req.add_special_tokens)
    prompt_ids = truncate_prompt(ids, req, state.engine.max_model_len)
    reasoning = gate = None
    if s.reasoning_parser:
        cls = registry("reasoning_parsers").load(s.reasoning_parser)
        thinking = _thinking(cls, text, kwargs)
        reasoning = lambda: cls(tok, thinking=thinking)  # noqa: E731
        gate = (lambda: cls(tok, thinking=True)) if thinking else None  # one gate per sequence
    req, hide = _adjust_for_parsers(req, reasoning, tool_parser)
    params = build_sampling_params(
        req, prompt_len=len(prompt_ids), max_model_len=state.engine.max_model_len,
        max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        defaults=getattr(state.engine, "generation_defaults", {}) or {}, max_logprobs=s.max_logprobs,
        structured=structured, reasoning_gate=gate, vocab_size=state.vocab_size,
    )
    role = s.response_role if req.add_generation_prompt else req.messages[-1].role
    return PreparedChat(prompt_ids, params, structured, structured_param, tool_parser, reasoning,
                        max_calls=1 if (tool_parser is not None and not req.parallel_tool_calls) else None,
                        hidden_tokens=special_token_texts(tok) if hide else frozenset(), echo=_echo(req, role),
                        role=role)
