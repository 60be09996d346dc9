"""The bounded jinja2 sandbox that chat templates render in.

jinja2's ``ImmutableSandboxedEnvironment`` keeps templates away from Python internals but not
from making huge strings (``{{ 'a' * 10**9 }}``) or spinning forever. This environment also
routes every size-changing operation through :mod:`heron.chat.guards` before it runs:

- operators ``*``, ``+``, ``**`` and ``%`` (jinja2's ``intercepted_binops``),
- ``~`` concatenation and every piece of output (the code generator emits calls to
  :meth:`BoundedSandbox.heron_concat` / :meth:`BoundedSandbox.heron_emit`, so macro and
  ``set`` block bodies count too),
- calls (``str`` methods such as ``ljust``/``join``/``format``/``replace``), ``range`` and the
  filters that can grow their input,
- loop iterations (each ``for`` iterates through :meth:`BoundedSandbox.heron_loop`, which
  checks the deadline).

Limits come from the :class:`~heron.chat.budget.Budget` active on the rendering thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from heron.chat.budget import MAX_RANGE, Budget, TemplateLimitError, active_budget
from heron.chat.guards import FILTER_CHECKS, check_binop, check_str_method

__all__ = ("BoundedSandbox",)


_LOOP_MARK = "_heron_loop_iter"  # set on the iterable node of every ``for`` when parsing


class _GuardedCodeGenerator(CodeGenerator):
    """Emits budget checks around output, ``~`` and loop iterables."""

    # Top-level output is yielded and counted by the renderer chunk by chunk; output into a
    # buffer (macro, ``set`` block, ``filter``/``call`` block bodies) is counted here.
    _buffered = False

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:  # noqa: N802 - jinja2's visitor naming
        self._buffered = frame.buffer is not None
        super().visit_Output(node, frame)

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        text = super()._output_const_repr(group)
        return f"environment.heron_emit({text})" if self._buffered else text

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if self._buffered:
            self.write("environment.heron_emit(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        if self._buffered:
            self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - jinja2's visitor naming
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.heron_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if not getattr(node, _LOOP_MARK, False):
            return super().visit(node, *args, **kwargs)
        self.write("environment.heron_loop(")  # jinja2 forbids custom node types: mark instead
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None


def _guarded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(
            f"range() of {len(numbers):,} items is over the chat template range limit ({MAX_RANGE:,} items)."
        )
    return numbers


def _check_result(budget: Budget, result: Any, what: str) -> Any:
    if isinstance(result, str | list | tuple) and len(result) > budget.max_items:  # max_items <= max_chars
        budget.size(result, len(result), what)
    return result


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    check = FILTER_CHECKS.get(name)
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/env first

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = active_budget()
        budget.tick()
        if check is not None:
            args = (*args[:skip], *check(budget, args[skip:], kwargs))
        return _check_result(budget, func(*args, **kwargs), f"The {name} filter")

    return guarded


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose templates cannot exhaust memory or time (see module doc)."""

    intercepted_binops = frozenset(("*", "+", "**", "%"))
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, **options: Any) -> None:
        options.setdefault("extensions", [loopcontrols])
        super().__init__(**options)
        self.globals["range"] = _guarded_range
        lipsum = self.globals.get("lipsum")
        if lipsum is not None:
            self.globals["lipsum"] = _guard_filter("lipsum", lipsum)

    def guard_filters(self) -> None:
        """Wrap every registered filter with the budget checks (call after adding filters)."""
        for name, func in list(self.filters.items()):
            if not getattr(func, "_heron_guarded", False):
                guarded = _guard_filter(name, func)
                guarded._heron_guarded = True  # type: ignore[attr-defined]
                self.filters[name] = guarded

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            setattr(loop.iter, _LOOP_MARK, True)
        return tree

    # -- called from generated template code -------------------------------------------------

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(active_budget(), operator, left, right)  # loops and calls check the deadline
        return self.binop_table[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja2's signature
        budget = active_budget()
        budget.tick()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format is wrapped on attribute access
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = check_str_method(budget, owner, getattr(target, "__name__", ""), args, kwargs)
        return _check_result(budget, super().call(__context, __obj, *args, **kwargs), "A call")

    def heron_emit(self, text: str) -> str:
        """Count one piece of output against the budget."""
        return active_budget().emit(text)

    def heron_concat(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b ~ ...``, refused before joining when the result would be too long."""
        strs = [p if type(p) is str else str(p) for p in parts]
        budget = active_budget()
        budget.tick()
        budget.chars(sum(map(len, strs)), "A '~' concatenation")
        return "".join(strs)

    def heron_loop(self, iterable: Any) -> Iterator[Any]:
        """Iterate ``iterable``, checking the deadline at every item."""
        budget = active_budget()
        for item in iterable:
            budget.tick()
            yield item
