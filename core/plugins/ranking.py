"""Order plugins for ``auto`` selection by the priority each one declares on its class.

Attention backends and linear kernels declare ``priority: ClassVar[int | None]``: ``auto`` tries
the plugins that declare an int, highest first; equal priorities are tried in name order, so
the choice never depends on install order. ``None`` (the interfaces' default) means "only when
named". Core knows no plugin by name: it reads the priorities and, when a third-party plugin
wins over a built-in one that would have served, says so in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from heron.plugins.registry import PluginLoadError, registry

__all__ = ("Candidate", "Ranking", "rank", "replacement_note")

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Candidate:
    """One plugin ``auto`` may try: its name, loaded object, declared priority and provenance."""

    name: str
    plugin: Any
    priority: int
    builtin: bool
    origin: str

    def describe(self) -> str:
        """``'name' (priority 100, built-in)`` or ``'name' (priority 500, from my-dist 1.0)``."""
        where = "built-in" if self.builtin else f"from {self.origin}"
        return f"{self.name!r} (priority {self.priority}, {where})"


@dataclass(slots=True)
class Ranking:
    """What ``auto`` may try for one plugin kind."""

    #: plugins declaring a priority, sorted by priority (highest first), then by name
    candidates: list[Candidate]
    #: ``"name: failed to load (why)"`` for each plugin that could not be loaded
    failed: list[str]
    #: names of plugins that declare no priority (used only when named)
    unranked: list[str]


def rank(kind: str) -> Ranking:
    """Load every plugin of ``kind`` and order those taking part in ``auto``."""
    reg = registry(kind)
    ranking = Ranking([], [], [])
    for name in reg.names():
        try:
            plugin = reg.load(name)
        except PluginLoadError as err:
            ranking.failed.append(f"{name}: failed to load ({str(err).splitlines()[0]})")
            continue
        priority = getattr(plugin, "priority", None)
        if priority is None:
            ranking.unranked.append(name)
            continue
        ranking.candidates.append(Candidate(name, plugin, priority, reg.is_builtin(name), reg.origin(name)))
    ranking.candidates.sort(key=lambda c: (-c.priority, c.name))
    return ranking


def replacement_note(kind: str, candidates: list[Candidate], winner: Candidate,
                     fits: Callable[[Any], bool]) -> str | None:
    """When a third-party ``winner`` beat a built-in plugin that ``fits`` too, a sentence saying
    which replaced which (also logged as a warning); else None."""
    if winner.builtin:
        return None
    later = candidates[candidates.index(winner) + 1:]
    beaten = next((c for c in later if c.builtin and fits(c.plugin)), None)
    if beaten is None:
        return None
    label = kind.replace("_", " ").rstrip("s")
    note = (f"third-party {label} {winner.describe()} replaces the built-in {beaten.describe()} under auto; "
            f"name one explicitly to choose otherwise")
    log.warning(note)
    return note
