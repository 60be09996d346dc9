"""``seed_oss``: Seed-OSS tool calls, Qwen3-Coder's XML inside ``<seed:tool_call>`` blocks.

The model writes ``<seed:tool_call><function=NAME><parameter=k>v</parameter>…</function></seed:tool_call>``;
text may come before and between calls. Values are read and converted exactly as in
``qwen3_coder`` (by the tool's JSON schema; strings stay strings). A block cut by the end of
output is still a call when its ``</function>`` was written; otherwise it, and anything
malformed, stays content verbatim.
"""

from __future__ import annotations

from heron_plugins.tool_parsers.qwen3_coder import Qwen3CoderToolParser

__all__ = ("SeedOssToolParser",)


class SeedOssToolParser(Qwen3CoderToolParser):
    """Reads ``<seed:tool_call><function=NAME>`` XML calls."""

    start_markers = ("<seed:tool_call>",)
    end_markers = ("</seed:tool_call>",)
