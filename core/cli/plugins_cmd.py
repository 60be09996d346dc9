"""``heron plugins list|doctor``: what is installed in each plugin group, and whether it loads.

``doctor`` loads every plugin, which runs its interface check: hook plugins' hook and argument
names against the hookspecs (with a did-you-mean for typos), middleware factories called once
with default settings to see that they return an ASGI middleware, kernels' declared priorities.
It prints one ``FAIL`` line per problem and exits non-zero when there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field

from heron.plugins import GROUPS, PluginLoadError, registry

__all__ = ("add_parser", "collect")


@dataclass(slots=True)
class _Row:
    group: str
    name: str
    target: str
    distribution: str | None
    version: str | None
    status: str
    error: str | None = None
    problems: list[str] = field(default_factory=list)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list and check installed plugins")
    psub = p.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    lst = psub.add_parser("list", help="show every plugin of every group with its load status")
    lst.add_argument("--group", choices=sorted(GROUPS) + sorted(GROUPS.values()), help="one group only")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=_list)
    doc = psub.add_parser("doctor", help="import and check every plugin; exit non-zero listing each problem")
    doc.set_defaults(func=_doctor)


def collect(group: str | None = None) -> list[_Row]:
    """Load every plugin (of ``group``, a kind or an entry-point group) and describe it."""
    rows = []
    for kind, ep_group in GROUPS.items():
        if group not in (None, kind, ep_group):
            continue
        reg = registry(kind)
        infos = reg.entry_points()
        for name in reg.names():
            info = infos.get(name)
            problems: list[str] = []
            try:
                reg.load(name)
                status, error = "ok", None
            except PluginLoadError as err:
                status, error, problems = "error", err.traceback, list(err.problems)
            rows.append(
                _Row(
                    ep_group,
                    name,
                    info.target if info else "(registered in-process)",
                    info.distribution if info else None,
                    info.version if info else None,
                    status,
                    error,
                    problems,
                )
            )
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = collect(args.group)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    headers = ("group", "name", "target", "distribution", "version", "status")
    table = [headers] + [
        (r.group, r.name, r.target, r.distribution or "-", r.version or "-", r.status) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(no plugins installed)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    rows = collect()
    failed = [r for r in rows if r.status != "ok"]
    for r in failed:
        if r.problems:  # interface-check findings: one line each
            for problem in r.problems:
                print(f"FAIL {r.group}:{r.name} ({r.target}): {problem}", file=sys.stderr)
        else:  # an import failure: the real traceback
            print(f"FAIL {r.group}:{r.name} ({r.target})\n{r.error}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} plugins loaded, {len(failed)} failed")
    return 1 if failed else 0
