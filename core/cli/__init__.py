"""The ``heron`` command line: one sub-command module per verb, wired here with argparse."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import heron
from heron.cli import bench_cmd, plugins_cmd, serve_cmd

__all__ = ("build_parser", "main")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heron",
        description="heron: an OpenAI-compatible LLM server and offline inference library.",
    )
    parser.add_argument("--version", action="version", version=f"heron {heron.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
