"""``heron serve``: the OpenAI-compatible HTTP server (not built yet; says so and exits 1)."""

from __future__ import annotations

import argparse
import sys

__all__ = ("add_parser",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the OpenAI-compatible server")
    p.add_argument("model", nargs="?", default=None, help="checkpoint dir, .gguf file or cached HF id")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    print(
        "heron serve: the HTTP server is not built yet (tracked as the OpenAI-compatible server "
        "issue); use the offline API `from heron import LLM` meanwhile.",
        file=sys.stderr,
    )
    return 1
