"""Special tokens kept for the parsers but hidden from the client.

Parsers whose markers are special tokens ask the detokenizer to keep special tokens
(``adjust_request`` sets ``skip_special_tokens=False``). The markers they parse are consumed;
every other special token (a stray ``<|eot_id|>``, a reserved token) would then leak into
``content``. :class:`TokenHider` removes those texts from a stream exactly as a scan of the whole
text would: a tail that may still grow into a hidden text is held back until it is decided, so
whole and streamed output are identical however the text is chunked.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection
from functools import lru_cache
from typing import Any

__all__ = ("TokenHider", "special_token_texts")

_by_tokenizer: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def special_token_texts(tokenizer: Any) -> frozenset[str]:
    """The texts of ``tokenizer``'s special tokens: what ``skip_special_tokens=True`` drops.

    That is every added token flagged special plus the named special tokens (bos, eos, pad,
    ``additional_special_tokens``...). Plain added tokens (Qwen's ``<tool_call>``, ``<think>``)
    are not special and are not in the set. Cached per tokenizer.

    Args:
        tokenizer: an HF tokenizer (anything with ``all_special_tokens`` and/or
            ``added_tokens_decoder``).
    """
    try:
        return _by_tokenizer[tokenizer]
    except (KeyError, TypeError):
        pass
    texts = {t for t in getattr(tokenizer, "all_special_tokens", None) or () if isinstance(t, str)}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    texts |= {str(tok.content) for tok in added.values() if getattr(tok, "special", False)}
    found = frozenset(t for t in texts if t)
    try:
        _by_tokenizer[tokenizer] = found
    except TypeError:  # not weak-referenceable: no cache
        pass
    return found


class _Table:
    """The compiled form of one set of hidden texts (shared by every request that uses it)."""

    __slots__ = ("first_chars", "pattern", "prefixes", "longest")

    def __init__(self, texts: frozenset[str]) -> None:
        ordered = sorted(texts, key=len, reverse=True)  # alternation tries longest first
        self.pattern = re.compile("|".join(map(re.escape, ordered)))
        self.prefixes = frozenset(t[:k] for t in texts for k in range(1, len(t)))
        self.first_chars = frozenset(t[0] for t in texts)
        self.longest = len(ordered[0])


@lru_cache(maxsize=16)
def _table(texts: frozenset[str]) -> _Table:
    return _Table(texts)


class TokenHider:
    """Drops every occurrence of some texts from a stream of text.

    At each position the longest hidden text that starts there is removed; text that may still
    become a hidden text is held back (at most the longest text's length minus one).

    Args:
        texts: the texts to remove (empty strings are ignored).
    """

    __slots__ = ("_table", "_buf")

    def __init__(self, texts: Collection[str]) -> None:
        texts = frozenset(t for t in texts if t)
        self._table = _table(texts) if texts else None
        self._buf = ""

    def feed(self, text: str, final: bool = False) -> str:
        """Take the next piece of text; return what is decided (``final``: everything left)."""
        table = self._table
        if table is None:
            return text
        buf = self._buf + text
        if not buf:
            return ""
        if table.first_chars.isdisjoint(buf):  # fast path: nothing here can start a hidden text
            self._buf = ""
            return buf
        out: list[str] = []
        pos = 0
        hold = len(buf) if final else self._hold_at(buf, 0)
        while True:
            match = table.pattern.search(buf, pos)
            if match is None or match.start() >= hold:
                break
            out.append(buf[pos:match.start()])
            pos = match.end()
            if pos > hold:
                hold = self._hold_at(buf, pos)
        out.append(buf[pos:hold])
        self._buf = buf[hold:]
        return "".join(out)

    def _hold_at(self, text: str, start: int) -> int:
        """The first index at or after ``start`` whose rest may still grow into a hidden text."""
        table = self._table
        assert table is not None
        n = len(text)
        for k in range(max(start, n - table.longest + 1), n):
            if text[k:] in table.prefixes:
                return k
        return n
