"""Chat-template rendering in a bounded jinja2 sandbox, following the HF template conventions.

Templates come from the checkpoint (tokenizer config or GGUF metadata), from ``--chat-template``
(a string or a file), or per request when the operator trusts request templates. Rendering never
gives templates access to Python internals (jinja2's immutable sandbox) and never lets them
exhaust memory or time: :class:`~heron.chat.sandbox.BoundedSandbox` refuses operations whose
result would exceed :class:`RenderLimits` before computing them, and the output is streamed
(``template.generate()``) and counted as it is produced. A violation is a
:class:`TemplateLimitError` that names the limit.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError

from heron.chat.budget import ChatTemplateError, RenderLimits, TemplateLimitError, budget_scope
from heron.chat.sandbox import BoundedSandbox

__all__ = ("ChatTemplateError", "RenderLimits", "TemplateLimitError", "load_template_text", "render_chat")


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(source: str):
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    env.guard_filters()
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as err:
        raise ChatTemplateError(f"chat template does not compile: {err}") from err


def load_template_text(value: str) -> str:
    """``--chat-template`` accepts a template or a path to one."""
    if len(value) < 4096 and os.path.isfile(value):
        with open(value, encoding="utf-8") as fh:
            return fh.read()
    return value


def _generate(template: Any, limits: RenderLimits, variables: dict[str, Any]) -> str:
    """Stream the template's output, checking the total size and the deadline between chunks."""
    with budget_scope(limits) as budget:
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            budget.chars(size, "The rendered chat prompt")
            budget.tick()
            chunks.append(chunk)
        return "".join(chunks)


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    special_tokens: dict[str, str] | None = None,
    limits: RenderLimits | None = None,
    **kwargs: Any,
) -> str:
    """Render ``messages`` (and ``tools``) into the prompt text.

    ``continue_final_message`` leaves the last (assistant) message open so the model continues
    it: the rendered text is cut right after that message's content.

    Args:
        limits: output size and time bounds of this render (None: :class:`RenderLimits`'
            defaults).

    Raises:
        TemplateLimitError: the template exceeded ``limits`` (the message names the limit).
        ChatTemplateError: the template does not compile or fails while rendering.
    """
    if continue_final_message and add_generation_prompt:
        raise ChatTemplateError("add_generation_prompt and continue_final_message cannot both be true")
    context = dict(special_tokens or {})
    context.update(kwargs)
    context.update(messages=messages, tools=tools or None, add_generation_prompt=add_generation_prompt)
    try:
        text = _generate(_compile(template), limits or RenderLimits(), context)
    except ChatTemplateError:
        raise
    except MemoryError as err:  # the limits should prevent it; never let it take the server
        raise TemplateLimitError("The chat template ran out of memory; lower max_output_chars.") from err
    except Exception as err:  # template runtime errors (undefined attributes, sandbox refusals)
        raise ChatTemplateError(f"chat template failed to render: {type(err).__name__}: {err}") from err
    if continue_final_message:
        final = messages[-1].get("content") if messages else None
        if isinstance(final, list):
            final = "".join(p.get("text", "") for p in final if isinstance(p, dict))
        if final:
            cut = text.rfind(final.strip())
            if cut >= 0:
                text = text[: cut + len(final.strip())]
    return text
