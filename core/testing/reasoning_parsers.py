"""Conformance kit for reasoning parsers: the same answer however the output is chunked.

A streamed response must say exactly what the non-streamed one says. For each
:class:`ReasoningCase`, :func:`check_reasoning_parser` checks ``parse(text)`` against the expected
``(reasoning, content)``, then feeds the text to a fresh parser through ``parse_delta`` in several
chunkings (one character at a time, one token at a time, random cuts, whole) followed by
``finish()``, and requires the joined deltas to equal what ``parse`` returned. With a tokenizer it
also checks ``is_reasoning_end`` on the text's token ids.

None and "" mean the same: "no reasoning" / "no content". Expected values and ``parse`` results
are compared after mapping "" to None, and the streamed side is the concatenation of every
non-None ``reasoning`` (``content``) field of the deltas, None when that concatenation is empty.

A tokenizer is optional for plugin authors calling the kit directly, but without one the kit
cannot check the one-token-at-a-time chunking nor ``is_reasoning_end``; it then says so with a
:class:`NoTokenizerWarning` (a test suite can turn it into an error, as heron's own does).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from heron.protocol import DeltaMessage

__all__ = (
    "Chunking",
    "NoTokenizerWarning",
    "ReasoningCase",
    "check_reasoning_parser",
    "chunkings",
    "split_by_tokens",
)

Piece = tuple[str, tuple[int, ...]]  # (delta_text, delta_token_ids)
_MAX_FAILURES = 20


class NoTokenizerWarning(UserWarning):
    """A conformance kit ran without a tokenizer, so the checks that need token ids were skipped."""


def _warn_no_tokenizer(parser_cls: type, unchecked: str) -> None:
    """Say which checks a kit skipped for ``parser_cls`` because it was given no tokenizer."""
    warnings.warn(NoTokenizerWarning(
        f"{parser_cls.__name__} was checked without a tokenizer, so {unchecked} went unchecked; "
        f"pass the model's HF tokenizer to the kit to check them."), stacklevel=3)


@dataclass(frozen=True, slots=True)
class ReasoningCase:
    """One model output and how it must split.

    Attributes:
        name: shown in failure messages.
        text: the complete model output (detokenized with special tokens kept).
        reasoning: the expected reasoning, None (or "") for none.
        content: the expected content, None (or "") for none.
        thinking: passed to the parser: False when the prompt turned thinking off.
        reasoning_ended: what ``is_reasoning_end`` must say on the text's token ids. None (the
            default) infers it where the answer is clear: True when the parser already streamed
            content before ``finish()`` and there was reasoning or thinking was off; otherwise
            unchecked. Set False for outputs cut inside their reasoning.
    """

    name: str
    text: str
    reasoning: str | None
    content: str | None
    thinking: bool = True
    reasoning_ended: bool | None = None


@dataclass(frozen=True, slots=True)
class Chunking:
    """One way of cutting a text into deltas; ``pieces`` join back to the text."""

    name: str
    pieces: list[Piece]


def check_reasoning_parser(
    parser_cls: type,
    tokenizer: Any,
    cases: Iterable[ReasoningCase],
    *,
    random_splits: int = 5,
    seed: int = 0,
) -> None:
    """Run every case through ``parser_cls`` and raise AssertionError listing what failed.

    Args:
        parser_cls: a ReasoningParser subclass, built as ``parser_cls(tokenizer, thinking=...)``
            afresh for every check.
        tokenizer: a HF tokenizer, or None to skip the token chunking and ``is_reasoning_end``
            (a :class:`NoTokenizerWarning` says so).
        cases: the outputs to check.
        random_splits: how many random chunkings per case.
        seed: makes the random chunkings reproducible (each case also mixes in its name).
    """
    if tokenizer is None:
        _warn_no_tokenizer(parser_cls, "the one-token-at-a-time chunking and is_reasoning_end()")
    failures: list[str] = []
    for case in cases:
        failures += _check_case(parser_cls, tokenizer, case, random_splits, seed)
    if failures:
        shown = "\n".join(f"- {f}" for f in failures[:_MAX_FAILURES])
        more = f"\n(and {len(failures) - _MAX_FAILURES} more)" if len(failures) > _MAX_FAILURES else ""
        raise AssertionError(f"{parser_cls.__name__} failed {len(failures)} check(s):\n{shown}{more}")


def chunkings(text: str, tokenizer: Any = None, *, random_splits: int = 5, seed: int | str = 0) -> Iterator[Chunking]:
    """The chunkings the kit streams ``text`` in (token chunking only with a tokenizer)."""
    yield Chunking("one character at a time", [(c, ()) for c in text])
    if tokenizer is not None:
        yield Chunking("one token at a time", split_by_tokens(tokenizer, text))
    rng = random.Random(seed)
    for k in range(random_splits):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, len(text) - 1))) if len(text) > 1 else []
        bounds = [0, *cuts, len(text)]
        yield Chunking(f"random split #{k} (seed {seed!r})", [(text[a:b], ()) for a, b in zip(bounds, bounds[1:], strict=False)])
    yield Chunking("whole text", [(text, ())])


def split_by_tokens(tokenizer: Any, text: str) -> list[Piece]:
    """Cut ``text`` at token boundaries (encoded without special tokens), ids per piece.

    Uses the fast tokenizer's offsets; tokens that end inside one character (byte-level pieces
    of a multi-byte character) travel together, as an incremental detokenizer would send them.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    pieces: list[Piece] = []
    start, group = 0, []
    for j, (tid, (_, end)) in enumerate(zip(ids, offsets, strict=True)):
        group.append(tid)
        shared = j + 1 < len(ids) and offsets[j + 1][0] < end  # next token ends the same character
        if end > start and not shared:
            pieces.append((text[start:end], tuple(group)))
            start, group = end, []
    if start < len(text) or group:
        pieces.append((text[start:], tuple(group)))
    return pieces


def _check_case(parser_cls: type, tokenizer: Any, case: ReasoningCase, random_splits: int, seed: int) -> list[str]:
    tag = f"[{case.name}]"
    expected = (_norm(case.reasoning), _norm(case.content))
    try:
        reasoning, content = parser_cls(tokenizer, thinking=case.thinking).parse(case.text)
    except Exception as err:  # reported, not raised
        return [f"{tag} parse() raised {err!r}"]
    parsed = (_norm(reasoning), _norm(content))
    failures = _differences(f"{tag} parse()", expected, parsed, "expected", "parse() gave")
    for chunking in chunkings(case.text, tokenizer, random_splits=random_splits, seed=f"{seed}/{case.name}"):
        where = f"{tag} streamed {chunking.name} {_show(chunking.pieces)}"
        try:
            streamed = _stream(parser_cls(tokenizer, thinking=case.thinking), chunking.pieces)
        except Exception as err:  # reported, not raised
            failures.append(f"{where}: raised {err!r}")
            continue
        failures += _differences(where, parsed, streamed, "parse() gave", "the deltas joined to")
    if tokenizer is not None:
        failures += [f"{tag} {f}" for f in _check_reasoning_end(parser_cls, tokenizer, case, parsed)]
    return failures


def _stream(parser: Any, pieces: Sequence[Piece]) -> tuple[str | None, str | None]:
    reasoning: list[str] = []
    content: list[str] = []
    for n in range(len(pieces) + 1):
        delta = parser.parse_delta(*pieces[n]) if n < len(pieces) else parser.finish()
        if delta is None:
            continue
        if not isinstance(delta, DeltaMessage):
            call = f"parse_delta({pieces[n][0]!r})" if n < len(pieces) else "finish()"
            raise TypeError(f"{call} returned {type(delta).__name__}, not DeltaMessage | None")
        reasoning.append(delta.reasoning or "")
        content.append(delta.content or "")
    return "".join(reasoning) or None, "".join(content) or None


def _check_reasoning_end(parser_cls: type, tokenizer: Any, case: ReasoningCase, parsed: tuple) -> list[str]:
    """``is_reasoning_end`` on all the ids: as expected, and the same when called step by step."""
    ids = list(tokenizer.encode(case.text, add_special_tokens=False))
    if tokenizer.decode(ids, skip_special_tokens=False) != case.text:
        return []  # the tokenizer does not round-trip this text; ids would say something else
    want = case.reasoning_ended
    try:
        if want is None:
            early = parser_cls(tokenizer, thinking=case.thinking).parse_delta(case.text, tuple(ids))
            if early is not None and early.content and (parsed[0] is not None or not case.thinking):
                want = True
        got = parser_cls(tokenizer, thinking=case.thinking).is_reasoning_end(ids)
        stepwise = parser_cls(tokenizer, thinking=case.thinking)
        last = None
        for n in range(1, len(ids) + 1):
            last = stepwise.is_reasoning_end(ids[:n])
    except Exception as err:  # reported, not raised
        return [f"is_reasoning_end() raised {err!r}"]
    failures = []
    if want is not None and bool(got) != want:
        failures.append(f"is_reasoning_end(all {len(ids)} token ids) is {got}, expected {want} "
                        f"(reasoning={_short(parsed[0])}, content={_short(parsed[1])})")
    if ids and bool(last) != bool(got):
        failures.append(f"is_reasoning_end() called on growing prefixes ends at {last}, but {got} in one call")
    return failures


def _differences(where: str, a: tuple, b: tuple, a_name: str, b_name: str) -> list[str]:
    """One failure line naming each of reasoning/content that differs, or none."""
    diffs = [f"{field} differs: {a_name} {_short(x)}, {b_name} {_short(y)}"
             for field, x, y in zip(("reasoning", "content"), a, b, strict=True) if x != y]
    return [f"{where}: {'; '.join(diffs)}"] if diffs else []


def _norm(value: str | None) -> str | None:
    return value or None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 5]}…{text[-4:]}"


def _short(value: str | None, limit: int = 120) -> str:
    return _cut(repr(value), limit)


def _show(pieces: Sequence[Piece], limit: int = 12) -> str:
    shown = ", ".join(_short(t, 40) for t, _ in pieces[:limit])
    rest = f", … {len(pieces) - limit} more" if len(pieces) > limit else ""
    return _cut(f"{len(pieces)} pieces [{shown}{rest}]", 300)
