"""``internlm``: ``<|action_start|><|plugin|>{json}<|action_end|>`` (InternLM 2 / 2.5).

The JSON object names the tool under ``name`` and its arguments under ``parameters`` (or
``arguments``). Text may come before; an unterminated action stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("InternlmToolParser",)


class InternlmToolParser(JsonBlockToolParser):
    """Reads ``<|action_start|><|plugin|>`` JSON actions."""

    start_markers = ("<|action_start|><|plugin|>",)
    end_markers = ("<|action_end|>",)
