"""What one chat-template render may spend: output characters and wall-clock time.

:class:`RenderLimits` is the operator's setting; a :class:`Budget` is one render's running
account of it. The bounded sandbox (:mod:`heron.chat.sandbox`) asks the active budget before
every operation that could make something big (string or list repetition, concatenation,
padding, joins, powers, ``%``/``format`` widths, ``range``) and refuses the operation *before*
computing it, so a hostile template fails fast with :class:`TemplateLimitError` instead of
filling memory. The deadline is checked at every loop iteration, call, operator and output
piece, so a template cannot spin for long either.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

__all__ = ("Budget", "ChatTemplateError", "RenderLimits", "TemplateLimitError", "active_budget", "budget_scope")


class ChatTemplateError(ValueError):
    """The template failed to compile or render (its message says where)."""


class TemplateLimitError(ChatTemplateError):
    """A render exceeded a :class:`RenderLimits` bound (the message names the limit)."""


#: the largest integer a template may compute with ``**`` (Python's own int-to-str limit)
MAX_INT_DIGITS = 4300
#: the most items one ``range()`` may have (jinja2's sandbox limit, reported as a limit error)
MAX_RANGE = 100_000


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Bounds on one chat-template render.

    Attributes:
        max_output_chars: the most characters the template may produce in all (its output,
            macro and ``set`` block bodies included), and the largest string any single
            operation may build; lists may hold at most ``max_output_chars // 8`` items. The
            default (32 Mi characters) is well above the largest request body (8 MiB).
        timeout_s: the most wall-clock seconds one render may take.
    """

    max_output_chars: int = 32 * 1024 * 1024
    timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_output_chars, int) or self.max_output_chars < 1:
            raise ValueError(f"max_output_chars must be a positive integer, got {self.max_output_chars!r}.")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}.")


class Budget:
    """One render's account: checks sizes before operations and the deadline as it goes."""

    __slots__ = ("deadline", "emitted", "limits", "max_chars", "max_items")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.max_chars = limits.max_output_chars
        self.max_items = max(1, limits.max_output_chars // 8)  # a list item costs a pointer
        self.deadline = time.monotonic() + limits.timeout_s
        self.emitted = 0

    def tick(self) -> None:
        """Raise once the render has run past its timeout."""
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"The chat template ran longer than the render timeout (timeout_s = {self.limits.timeout_s:g} s)."
            )

    def chars(self, n: int, what: str) -> None:
        """Refuse an operation that would build a string of ``n`` characters when too long."""
        if n > self.max_chars:
            raise TemplateLimitError(
                f"{what} would make {n:,} characters, over the chat template output limit "
                f"(max_output_chars = {self.max_chars:,})."
            )

    def items(self, n: int, what: str) -> None:
        """Refuse an operation that would build a list of ``n`` items when too long."""
        if n > self.max_items:
            raise TemplateLimitError(
                f"{what} would make {n:,} items, over the chat template list limit "
                f"(max_output_chars / 8 = {self.max_items:,})."
            )

    def size(self, value: object, n: int, what: str) -> None:
        """``chars`` for strings, ``items`` for lists and tuples."""
        (self.chars if isinstance(value, str) else self.items)(n, what)

    def emit(self, text: str) -> str:
        """Count ``text`` as produced output (top level, macro or block body) and pass it on."""
        self.emitted += len(text)
        if self.emitted > self.max_chars:
            raise TemplateLimitError(
                f"The chat template produced more than {self.max_chars:,} characters, over the "
                f"output limit (max_output_chars)."
            )
        if time.monotonic() > self.deadline:
            self.tick()
        return text


_local = threading.local()
_DEFAULT = RenderLimits()


def active_budget() -> Budget:
    """This thread's render budget; outside a render (compile-time constant folding) a fresh
    default one, so the checks still hold."""
    budget = getattr(_local, "budget", None)
    return budget if budget is not None else Budget(_DEFAULT)


class budget_scope:  # noqa: N801 - used as a context manager, like a function
    """``with budget_scope(limits) as budget:`` makes ``budget`` this thread's active budget."""

    __slots__ = ("_budget", "_saved")

    def __init__(self, limits: RenderLimits) -> None:
        self._budget = Budget(limits)
        self._saved: Budget | None = None

    def __enter__(self) -> Budget:
        self._saved = getattr(_local, "budget", None)
        _local.budget = self._budget
        return self._budget

    def __exit__(self, *exc: object) -> None:
        _local.budget = self._saved
