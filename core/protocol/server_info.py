"""Answers of the small operational routes: ``/health``, ``/ping``, ``/version`` and ``/load``.

The routes build these bodies as plain dicts; the models say what the bodies hold, so the
OpenAPI document (``heron.server.openapi``) describes them like every other response.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ("HealthStatus", "ServerLoad", "VersionInfo")


class HealthStatus(BaseModel):
    """``{"status": "ok"}``, or ``"unavailable"`` with the reason (loading, draining, engine failed)."""

    status: Literal["ok", "unavailable"]
    reason: str | None = Field(default=None, description="Why the server cannot serve (only when unavailable).")


class VersionInfo(BaseModel):
    """The heron version that answers."""

    version: str


class ServerLoad(BaseModel):
    """Requests in flight and the engine's queues, for load balancers."""

    server_load: int = Field(description="HTTP requests being handled now.")
    num_requests_running: int = Field(description="Sequences the engine is running.")
    num_requests_waiting: int = Field(description="Sequences waiting for a slot.")
    kv_cache_usage_perc: float = Field(description="Fraction of KV-cache blocks held by live sequences (0 to 1).")
