"""Formats whose markers are special tokens: ask the detokenizer to keep them.

A reasoning parser reads text; if its markers are special tokens in its model family's
vocabulary (``[THINK]`` in Magistral, the Harmony tokens of gpt-oss, ...), the default
``skip_special_tokens=True`` would strip them before the parser sees them. The server calls
``adjust_request`` before building the sampling parameters and hides the special tokens that no
parser consumed from the answer, so keeping them changes nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = ("KeepsSpecialTokens",)


class KeepsSpecialTokens:
    """Mixin (list it before the parser base): ``adjust_request`` turns ``skip_special_tokens`` off."""

    def adjust_request(self, request: Any) -> Any:
        """Set ``request.skip_special_tokens = False`` and return the request."""
        if getattr(request, "skip_special_tokens", False):
            request.skip_special_tokens = False
        return request
