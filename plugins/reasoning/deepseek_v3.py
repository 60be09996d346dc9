"""DeepSeek V3.1+ hybrid models: R1-style reasoning only when the request turned thinking on.

Their templates think only when ``chat_template_kwargs.thinking`` (or ``enable_thinking``) is
true and then prefill ``<think>``; otherwise the output is plain content. With ``thinking=True``
this parser is exactly :mod:`deepseek_r1`; with ``thinking=False`` everything is content.
"""

from __future__ import annotations

from heron_plugins.reasoning.deepseek_r1 import DeepSeekR1ReasoningParser

__all__ = ("DeepSeekV3ReasoningParser",)


class DeepSeekV3ReasoningParser(DeepSeekR1ReasoningParser):
    """Like DeepSeek-R1 when thinking; the template's default is not to think."""

    thinking_kwargs = ("thinking", "enable_thinking")
    thinking_default = False
