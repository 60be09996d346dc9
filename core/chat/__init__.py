"""Chat rendering (sandboxed templates, message/tool normalisation) and the per-choice parse pipeline."""

from heron.chat.budget import RenderLimits, TemplateLimitError
from heron.chat.content_format import CONTENT_FORMATS, detect_content_format, resolve_content_format
from heron.chat.messages import normalize_messages, normalize_tools
from heron.chat.pipeline import ChoicePipeline, PipelineResult
from heron.chat.special_tokens import TokenHider, special_token_texts
from heron.chat.template import ChatTemplateError, load_template_text, render_chat

__all__ = (
    "CONTENT_FORMATS",
    "ChatTemplateError",
    "ChoicePipeline",
    "PipelineResult",
    "RenderLimits",
    "TemplateLimitError",
    "TokenHider",
    "detect_content_format",
    "load_template_text",
    "normalize_messages",
    "normalize_tools",
    "render_chat",
    "resolve_content_format",
    "special_token_texts",
)
