"""Process trees from /proc: a server with its engine process and tensor-parallel workers, for tests
and benchmarks that measure or kill the whole of ``heron serve``."""

from __future__ import annotations

from pathlib import Path

__all__ = ("process_tree",)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (the engine process, its workers), from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [pid], {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found
