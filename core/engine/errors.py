"""Errors the engine raises to its callers."""

from __future__ import annotations

__all__ = ("EngineDeadError", "RequestRejectedError")


class RequestRejectedError(ValueError):
    """The engine refused a request (bad prompt, parameters or constraint); the request's fault."""


class EngineDeadError(RuntimeError):
    """The engine loop stopped after an error; no request can be served."""
