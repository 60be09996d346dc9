"""The replay checkpoint the Responses tests serve: Qwen3-style thinking plus Hermes tool calls.

The test model plugin of :mod:`tests.e2e.replay` writes an exact script chosen by the last case
token of the prompt, so the tests can force a function call, then a text answer once the
function's output (which carries the next case token) comes back through ``previous_response_id``,
and reasoning text for ``--reasoning-parser qwen3``. :func:`replay_site` makes the
installed-looking distribution whose ``heron.models`` entry point is that plugin.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.replay.checkpoint import ARCHITECTURE, ReplayCheckpoint, write_checkpoint
from tests.e2e.replay.formats import PARIS, Case, Family

__all__ = ("ANSWER", "CALL_REASONING", "FAMILY", "PARIS", "REASONING", "SERVED", "TOOL", "replay_site", "write")

SERVED = "replay"
CALL_REASONING = "\nThe user wants the weather in Paris.\n"
REASONING = "\nThe tool said sunny.\n"
ANSWER = "It is sunny in Paris."
TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city", "strict": False,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]}}
_CALL = '<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps(PARIS) + "}\n</tool_call>"
FAMILY = Family(
    "responses", "hermes", (), ("<think>", "</think>", "<tool_call>", "</tool_call>"), reasoning_parser="qwen3",
    cases=[Case("call", f"<think>{CALL_REASONING}</think>\n\n{_CALL}", None, [("get_weather", PARIS)],
                reasoning=CALL_REASONING),
           Case("answer", f"<think>{REASONING}</think>\n\n{ANSWER}", ANSWER, [], reasoning=REASONING)],
)


def write(folder: Path) -> ReplayCheckpoint:
    """Write the checkpoint into ``folder``; its ``case_tokens`` map "call"/"answer" to prompt tokens."""
    return write_checkpoint(folder, FAMILY)


def replay_site(root: Path) -> Path:
    """A folder to put on PYTHONPATH: a distribution whose ``heron.models`` entry is the replay model."""
    info = root / "heron_replay_responses-0.0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: heron-replay-responses\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[heron.models]\n{ARCHITECTURE} = tests.e2e.replay.model:{ARCHITECTURE}\n")
    return root
