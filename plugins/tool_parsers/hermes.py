"""``hermes`` (alias ``qwen3_json``): ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` blocks.

Hermes 2 Pro/3, Qwen2.5, QwQ and Qwen3 write one JSON object per block, with text allowed
before and between blocks. An unterminated last block (output cut right after the JSON) is
still a call when its JSON is complete; otherwise it stays content.
"""

from __future__ import annotations

from heron_plugins.tool_parsers._json_block import JsonBlockToolParser

__all__ = ("HermesToolParser",)


class HermesToolParser(JsonBlockToolParser):
    """Reads ``<tool_call>`` JSON blocks."""

    start_markers = ("<tool_call>",)
    end_markers = ("</tool_call>",)
    accept_unclosed = True
