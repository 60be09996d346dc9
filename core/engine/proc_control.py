"""Control calls of :class:`heron.engine.proc_client.EngineProcClient`: request/response messages.

Each call (LoRA adapters, the prefix cache, sleep and wake-up, the profiler) is sent as
``("call", call_id, name, args)``; the engine process runs it between two steps and answers
``("result", call_id, ok, value, snapshot)``, where ``value`` is the result or the exception
raised (the same class and message), so these methods behave like ``AsyncEngine``'s.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from heron.engine.sleep import check_sleep

__all__ = ("ProcControl", "settle")


def settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    """Complete ``future`` with a call's result or exception (on its event loop)."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class ProcControl:
    """The control calls (a mixin: the client provides the pipe, the lock and the snapshot)."""

    engine: Any
    _lock: threading.Lock
    _call_ids: Iterator[int]
    _calls: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]]
    _streams: dict[str, Any]
    _sleep_requested: bool

    def _check_running(self) -> None:  # pragma: no cover - the client's
        raise NotImplementedError

    def _post(self, msg: tuple) -> None:  # pragma: no cover - the client's
        raise NotImplementedError

    def _asleep(self) -> bool:  # pragma: no cover - the client's
        raise NotImplementedError

    async def _control(self, name: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            self._check_running()
            call_id = next(self._call_ids)
            self._calls[call_id] = (loop, future)
        self._post(("call", call_id, name, args))
        return await future

    async def add_lora(self, lora_request: Any) -> None:
        """Load and register an adapter (read off the engine's loop). Raises LoRAError, ValueError."""
        if self.engine is None or self.engine.lora is None:
            raise ValueError("LoRA is not enabled; start with --enable-lora.")
        await self._control("add_lora", lora_request)

    async def remove_lora(self, name: str) -> bool:
        return await self._control("remove_lora", name)

    async def reset_prefix_cache(self) -> int:
        """Forget every cached prefix no request holds; returns the blocks dropped."""
        return await self._control("reset_prefix_cache")

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        """Free the KV pool (level 1) and the weights (level 2); ``mode``: abort, wait or keep the
        open requests (see :mod:`heron.engine.sleep`). Raises ValueError for a bad level or mode."""
        check_sleep(self.engine, level, mode)
        self._sleep_requested = True
        try:
            while mode == "wait" and self._streams:
                await asyncio.sleep(0.05)
            await self._control("sleep", level, mode)
        except BaseException:
            self._sleep_requested = self._asleep()
            raise

    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Reload what sleep released (``tags``: only ``weights`` or ``kv_cache``). Raises ValueError."""
        await self._control("wake_up", tags)
        self._sleep_requested = self._asleep()

    async def start_profile(self, directory: str | os.PathLike[str]) -> None:
        """Profile the engine's steps from now on. Raises ValueError when already profiling."""
        await self._control("start_profile", os.fspath(directory))

    async def stop_profile(self) -> list[Path]:
        """Stop profiling and write the trace (from the engine process); returns its files."""
        return await self._control("stop_profile")
