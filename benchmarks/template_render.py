"""What the bounded chat-template sandbox costs on real templates, side by side with plain jinja2.

Renders the default model's template and two tool-calling templates (Llama 3 and Qwen style,
from the tests) with jinja2's own immutable sandbox and with ``heron.chat.render_chat`` (which
checks sizes before operators compute and a deadline as it goes), and prints microseconds per
render and the ratio.

    .venv/bin/python benchmarks/template_render.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heron.chat import render_chat  # noqa: E402
from heron.loader import load_checkpoint  # noqa: E402
from tests.core.chat.templates import LLAMA3_TOOLS, QWEN_TOOLS  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "user", "content": "And in Rome?"}] * 4


def best(fn, n: int = 300) -> float:
    """Seconds per call: the best of five batches of ``n``."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append(time.perf_counter() - start)
    return min(times) / n


def main() -> None:
    templates = {"SmolLM2 (default model)": load_checkpoint(None).tokenizer.chat_template,
                 "Llama 3 with tools": LLAMA3_TOOLS, "Qwen with tools": QWEN_TOOLS}
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent)
    variables = {"tools": TOOLS, "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>"}
    print(f"{'template':28} {'jinja2 us':>10} {'heron us':>10} {'ratio':>6}")
    for name, source in templates.items():
        plain = env.from_string(source)
        before = best(lambda p=plain: p.render(messages=MESSAGES, **variables))
        after = best(lambda s=source: render_chat(s, MESSAGES, **variables))
        print(f"{name:28} {before * 1e6:10.0f} {after * 1e6:10.0f} {after / before:6.2f}")


if __name__ == "__main__":
    main()
