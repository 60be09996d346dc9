"""How message content reaches a chat template: a string, or OpenAI's list of parts.

vLLM's ``--chat-template-content-format``: ``string`` hands every message's content to the
template as one string (text parts joined with newlines); ``openai`` hands it as OpenAI's list of
parts (``[{"type": "text", "text": ...}]``, a plain string becoming one such part); ``auto``
(the default) reads the template and picks ``openai`` when it loops over a message's content
(``{% for part in message['content'] %}``), else ``string``. The detection follows the
template's variables through ``{% set %}`` assignments, as vLLM's does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes

__all__ = ("CONTENT_FORMATS", "as_format", "detect_content_format", "resolve_content_format")

#: the values ``--chat-template-content-format`` takes
CONTENT_FORMATS = ("auto", "string", "openai")


def _is_var(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


def _is_item(node: nodes.Node, name: str, key: str) -> bool:
    """``name[key]`` or ``name.key``."""
    if isinstance(node, nodes.Getitem):
        return _is_var(node.node, name) and isinstance(node.arg, nodes.Const) and node.arg.value == key
    return isinstance(node, nodes.Getattr) and _is_var(node.node, name) and node.attr == key


def _reads(node: nodes.Node, name: str, key: str | None = None) -> bool:
    """``node`` is the variable (or its ``key``), possibly filtered, tested or sliced."""
    if isinstance(node, nodes.Filter | nodes.Test):
        return node.node is not None and _reads(node.node, name, key)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        return _reads(node.node, name, key)
    return _is_item(node, name, key) if key else _is_var(node, name)


def _aliases(root: nodes.Template, name: str) -> Iterator[str]:
    """``name`` and every variable ``{% set %}`` makes from it (or from one of those)."""
    yield name
    todo, seen = deque([name]), {name}
    while todo:
        current = todo.popleft()
        for assign in root.find_all(nodes.Assign):
            if isinstance(assign.target, nodes.Name) and _reads(assign.node, current):
                target = assign.target.name
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
                    yield target


def _loop_targets(root: nodes.Template, sources: list[str], key: str | None = None) -> Iterator[str]:
    """Names bound by ``{% for x in <source>[key] %}`` loops over one of ``sources``."""
    for loop in root.find_all(nodes.For):
        if isinstance(loop.target, nodes.Name) and any(_reads(loop.iter, s, key) for s in sources):
            yield loop.target.name


@lru_cache(maxsize=32)
def detect_content_format(template: str) -> str:
    """``"openai"`` when ``template`` loops over a message's ``content``, else ``"string"``
    (also when the template does not parse: rendering will report that)."""
    try:
        root = jinja2.Environment().parse(template)
    except jinja2.TemplateError:
        return "string"
    messages = list(_aliases(root, "messages"))
    message_names = list(_loop_targets(root, messages))
    return "openai" if next(_loop_targets(root, message_names, "content"), None) else "string"


def resolve_content_format(template: str, setting: str) -> str:
    """The format messages take for ``template`` under ``--chat-template-content-format``."""
    return detect_content_format(template) if setting == "auto" else setting


def as_format(content: Any, fmt: str) -> Any:
    """``content`` (None, a string or a list of text parts) in ``fmt``; non-text parts are refused."""
    if content is None:
        parts: list[Any] = []
    elif isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = content
    else:
        return content  # not OpenAI's shape: the template sees it as sent
    texts = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"content part of type {kind!r} is not supported by this text-only model")
        texts.append(part.get("text", ""))
    if fmt == "openai":
        return [{"type": "text", "text": t} for t in texts]
    return "\n".join(texts)
