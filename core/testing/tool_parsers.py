"""Conformance kit for tool parsers: the same calls however the output is chunked.

Public API (stable):

- :class:`ToolParserCase` ``(name, text, content, calls, tools=None)``: one model output, the
  content expected outside calls (None or "" for none) and the calls expected, as
  ``(name, arguments object)`` pairs.
- :func:`check_tool_parser` ``(parser_cls, tokenizer, cases, *, tools=None, random_splits=5,
  seed=0)``: for every case, checks ``parse(text)`` against the expectation, then streams the text
  through ``parse_delta`` + ``finish()`` of a fresh parser in every chunking (one character at a
  time, one token at a time when a tokenizer is given (without one a
  :class:`~heron.testing.reasoning_parsers.NoTokenizerWarning` says that chunking was skipped),
  ``random_splits`` random cuts, whole) and
  requires the deltas to obey the streaming invariants and to join to exactly what ``parse``
  returned, ids included (``parse`` is called again on the streaming parser, which must hand out
  the ids it streamed). Raises AssertionError naming the case, the chunking (with its pieces) and
  what differed.
- :class:`ToolStreamChecker` / :func:`invariant_errors`: the streaming invariants alone, usable
  at runtime by the server: every delta is a DeltaMessage or None; a call index first appears as
  0, then 1, …; its first delta carries a non-empty unique ``id``, ``type == "function"`` and a
  non-empty ``function.name``, later deltas carry none of them; each call's argument fragments
  join to a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from heron.protocol import DeltaMessage, ToolParseResult
from heron.testing.reasoning_parsers import (  # shared helpers
    _cut,
    _short,
    _show,
    _warn_no_tokenizer,
    chunkings,
)

__all__ = ("StreamedCall", "ToolParserCase", "ToolStreamChecker", "check_tool_parser", "invariant_errors")

Piece = tuple[str, tuple[int, ...]]  # (delta_text, delta_token_ids)
_MAX_FAILURES = 20


@dataclass(slots=True)
class ToolParserCase:
    """One model output and what a parser must read from it.

    Attributes:
        name: shown in failure messages.
        text: the complete model output (detokenized with special tokens kept).
        content: the expected text outside calls, None (or "") for none.
        calls: the expected calls, in order, as ``(name, arguments object)``.
        tools: the request's ``tools`` for this case (overrides ``check_tool_parser(tools=)``).
    """

    name: str
    text: str
    content: str | None
    calls: list[tuple[str, dict]] = field(default_factory=list)
    tools: list[dict] | None = None


@dataclass(slots=True)
class StreamedCall:
    """One call as its deltas assembled it."""

    index: int
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: str = ""


class ToolStreamChecker:
    """Checks the streaming invariants delta by delta; ``feed`` and ``close`` return problems."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: list[StreamedCall] = []
        self._ids: set[str] = set()

    def feed(self, delta: Any, where: str = "delta") -> list[str]:
        """Take the next delta (None allowed); return what it breaks, [] when nothing."""
        if delta is None:
            return []
        if not isinstance(delta, DeltaMessage):
            return [f"{where} is a {type(delta).__name__}, not DeltaMessage | None"]
        errors: list[str] = []
        if delta.content is not None:
            self.content.append(delta.content)
        for tc in delta.tool_calls:
            fn = tc.function
            if tc.index == len(self.calls):
                errors += self._first(tc, where)
            elif 0 <= tc.index < len(self.calls):
                for attr, value in (("id", tc.id), ("type", tc.type), ("function.name", fn and fn.name)):
                    if value is not None:
                        errors.append(f"{where}: call {tc.index} sends {attr}={value!r} again after its first delta")
            else:
                errors.append(f"{where}: call index {tc.index} appears, expected {len(self.calls)} next "
                              f"(indexes start at 0 and rise by one)")
                continue
            call = self.calls[tc.index]
            if fn is not None and fn.arguments:
                call.arguments += fn.arguments
        return errors

    def _first(self, tc: Any, where: str) -> list[str]:
        fn = tc.function
        call = StreamedCall(tc.index, tc.id, tc.type, fn.name if fn else None)
        self.calls.append(call)
        errors = []
        if not isinstance(tc.id, str) or not tc.id:
            errors.append(f"{where}: the first delta of call {tc.index} has no id")
        elif tc.id in self._ids:
            errors.append(f"{where}: call {tc.index} reuses the id {tc.id!r}")
        else:
            self._ids.add(tc.id)
        if tc.type != "function":
            errors.append(f"{where}: the first delta of call {tc.index} has type {tc.type!r}, not 'function'")
        if not call.name:
            errors.append(f"{where}: the first delta of call {tc.index} has no function name")
        return errors

    def close(self) -> list[str]:
        """End of stream: every call's argument fragments must join to a JSON object."""
        errors = []
        for call in self.calls:
            try:
                value = _strict_loads(call.arguments)
            except ValueError:
                errors.append(f"the arguments of call {call.index} join to {_short(call.arguments)}, not valid JSON")
                continue
            if not isinstance(value, dict):
                errors.append(f"the arguments of call {call.index} join to {_short(call.arguments)}, not a JSON object")
        return errors

    def joined_content(self) -> str | None:
        return "".join(self.content) or None


def invariant_errors(deltas: Iterable[Any]) -> list[str]:
    """Every streaming-invariant violation in a complete sequence of deltas (None allowed)."""
    checker = ToolStreamChecker()
    errors: list[str] = []
    for n, delta in enumerate(deltas):
        errors += checker.feed(delta, f"delta #{n}")
    return errors + checker.close()


def check_tool_parser(
    parser_cls: type,
    tokenizer: Any,
    cases: Iterable[ToolParserCase],
    *,
    tools: list[dict] | None = None,
    random_splits: int = 5,
    seed: int = 0,
) -> None:
    """Run every case through ``parser_cls`` and raise AssertionError listing what failed.

    Args:
        parser_cls: a ToolParser subclass, built as ``parser_cls(tokenizer, tools)`` afresh for
            every check.
        tokenizer: a HF tokenizer, or None to skip the one-token-at-a-time chunking (a
            ``NoTokenizerWarning`` says so).
        cases: the fixtures.
        tools: the ``tools`` passed to the parser when a case has none of its own.
        random_splits: how many random chunkings to try per case.
        seed: seeds the random chunkings (mixed with the case name).
    """
    if tokenizer is None:
        _warn_no_tokenizer(parser_cls, "the one-token-at-a-time chunking")
    failures: list[str] = []
    for case in cases:
        failures += _check_case(parser_cls, tokenizer, case, case.tools or tools, random_splits, seed)
    if failures:
        shown = "\n".join(f"- {f}" for f in failures[:_MAX_FAILURES])
        more = f"\n(and {len(failures) - _MAX_FAILURES} more)" if len(failures) > _MAX_FAILURES else ""
        raise AssertionError(f"{parser_cls.__name__} failed {len(failures)} check(s):\n{shown}{more}")


def _check_case(parser_cls: type, tokenizer: Any, case: ToolParserCase, tools: list[dict] | None,
                random_splits: int, seed: int) -> list[str]:
    tag = f"[{case.name}]"
    try:
        parsed = parser_cls(tokenizer, tools).parse(case.text)
    except Exception as err:  # reported, not raised
        return [f"{tag} parse() raised {err!r}"]
    failures = [f"{tag} parse(): {e}" for e in _expectation_errors(case, parsed)]
    if failures:
        return failures  # streaming is compared with parse(); fix parse() first
    for chunking in chunkings(case.text, tokenizer, random_splits=random_splits, seed=f"{seed}/{case.name}"):
        where = f"{tag} {chunking.name}: {_show(chunking.pieces)}"
        try:
            errors = _stream_errors(parser_cls(tokenizer, tools), case.text, chunking.pieces)
        except Exception as err:  # reported, not raised
            errors = [f"raised {err!r}"]
        failures += [f"{where}: {e}" for e in errors]
    return failures


def _expectation_errors(case: ToolParserCase, parsed: Any) -> list[str]:
    if not isinstance(parsed, ToolParseResult):
        return [f"returned {type(parsed).__name__}, not ToolParseResult"]
    errors = []
    if (parsed.content or None) != (case.content or None):
        errors.append(f"content is {_short(parsed.content)}, expected {_short(case.content)}")
    got = [(c.function.name, _loads(c.function.arguments)) for c in parsed.tool_calls]
    if got != [(n, a) for n, a in case.calls]:
        errors.append(f"calls are {_cut(repr(got), 300)}, expected {_cut(repr(list(case.calls)), 300)}")
    ids = [c.id for c in parsed.tool_calls]
    if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        errors.append(f"ids must be non-empty and unique, got {ids!r}")
    if any(c.type != "function" for c in parsed.tool_calls):
        errors.append("every call must have type 'function'")
    return errors


def _stream_errors(parser: Any, text: str, pieces: Sequence[Piece]) -> list[str]:
    checker = ToolStreamChecker()
    errors: list[str] = []
    for n in range(len(pieces) + 1):
        call = f"parse_delta(piece #{n} {_short(pieces[n][0], 30)})" if n < len(pieces) else "finish()"
        try:
            delta = parser.parse_delta(*pieces[n]) if n < len(pieces) else parser.finish()
        except Exception as err:  # reported, not raised
            return [*errors, f"{call} raised {err!r}"]
        errors += checker.feed(delta, call)
    errors += checker.close()
    if errors:
        return errors
    # the same parser must hand out the ids it streamed: parse() and streaming agree exactly
    reference = parser.parse(text)
    streamed_content, want_content = checker.joined_content(), reference.content or None
    if streamed_content != want_content:
        errors.append(f"content joins to {_short(streamed_content)}, parse() gave {_short(want_content)}")
    if len(checker.calls) != len(reference.tool_calls):
        names = [c.name for c in checker.calls]
        want = [c.function.name for c in reference.tool_calls]
        return [*errors, f"{len(names)} call(s) streamed {names}, parse() gave {len(want)} {want}"]
    for call, ref in zip(checker.calls, reference.tool_calls, strict=True):
        if call.name != ref.function.name:
            errors.append(f"call {call.index} streamed name {call.name!r}, parse() gave {ref.function.name!r}")
        if _loads(call.arguments) != _loads(ref.function.arguments):
            errors.append(f"call {call.index} arguments join to {_short(call.arguments)}, "
                          f"parse() gave {_short(ref.function.arguments)}")
        if call.id != ref.id:
            errors.append(f"call {call.index} streamed id {call.id!r}, parse() on the same parser gave {ref.id!r}")
    return errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_loads(text: str) -> Any:
    """``json.loads`` without Python's NaN/Infinity extension (clients' parsers reject them)."""
    return json.loads(text, parse_constant=_reject_constant)


def _loads(arguments: Any) -> Any:
    try:
        return _strict_loads(arguments)
    except (TypeError, ValueError):
        return f"<invalid JSON {arguments!r}>"
