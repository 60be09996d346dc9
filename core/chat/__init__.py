"""Chat rendering: sandboxed templates, message/tool normalisation (the parse pipeline comes later)."""

from heron.chat.messages import normalize_messages, normalize_tools
from heron.chat.pipeline import ChoicePipeline, PipelineResult
from heron.chat.template import ChatTemplateError, load_template_text, render_chat

__all__ = ("ChatTemplateError", "ChoicePipeline", "PipelineResult", "load_template_text", "normalize_messages", "normalize_tools", "render_chat")
