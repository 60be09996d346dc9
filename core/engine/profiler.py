"""The torch profiler around the engine loop (vLLM's ``/start_profile`` and ``/stop_profile``).

The profiler starts and stops on the engine thread, between two steps, so it records the steps
run in between (the model's forward, sampling, bookkeeping). Stopping writes one Chrome/Perfetto
trace, ``heron-engine.<pid>.<time>.pt.trace.json.gz``, into the directory given at start (vLLM
names its directory with ``VLLM_TORCH_PROFILER_DIR``); open it in ``chrome://tracing``,
https://ui.perfetto.dev or TensorBoard's profiler plugin.

Under tensor parallelism the engine's profiler starts and stops one on every rank too: each rank
writes its own trace (``heron-engine.rank<N>.<pid>...``) into the same directory (on its own
machine), and stopping returns every rank's files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ("EngineProfiler", "ProfilerControl")


class EngineProfiler:
    """One profiling session at a time; not thread-safe (call it from the engine thread)."""

    def __init__(self, name: str = "heron-engine", *, drive_ranks: bool = True) -> None:
        self.name = name  # the trace files' prefix
        self.drive_ranks = drive_ranks  # rank 0's: start and stop the other tensor-parallel ranks' too
        self._profile: Any = None
        self._directory: Path | None = None
        self._ranks = False  # the other tensor-parallel ranks are profiling too

    @property
    def running(self) -> bool:
        return self._profile is not None

    def start(self, directory: str | os.PathLike[str]) -> None:
        """Start recording. Raises ValueError when a session is already running."""
        if self._profile is not None:
            raise ValueError("The profiler is already running; POST /stop_profile first.")
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        group = _tensor_parallel_group() if self.drive_ranks else None
        name = self.name if group is None else f"{self.name}.rank0"
        handler = torch.profiler.tensorboard_trace_handler(str(folder), worker_name=f"{name}.{os.getpid()}",
                                                           use_gzip=True)
        profile = torch.profiler.profile(activities=activities, record_shapes=True, on_trace_ready=handler)
        if group is not None:
            group.control("start_profile", directory=str(folder))
            self._ranks = True
        profile.start()
        self._profile, self._directory = profile, folder

    def stop(self) -> list[Path]:
        """Stop recording and write the trace; returns the files written. Raises ValueError when
        no session runs."""
        if self._profile is None or self._directory is None:
            raise ValueError("The profiler is not running; POST /start_profile first.")
        before = set(self._directory.iterdir())
        profile, self._profile = self._profile, None
        profile.stop()  # calls the trace handler: the file is written now
        files = sorted(set(self._directory.iterdir()) - before)
        group = _tensor_parallel_group() if self._ranks else None
        self._ranks = False
        if group is not None:
            others = [Path(p) for paths in group.control("stop_profile")[1:] for p in paths]
            files = sorted(set(files) | set(others))
        return files


def _tensor_parallel_group() -> Any:
    """This process's running tensor-parallel group (rank 0's handle), else None."""
    from heron.distributed.group import current_group

    return current_group()


class ProfilerControl:
    """Profiling for :class:`heron.engine.AsyncEngine` (a mixin: it runs on the engine thread)."""

    _profiler: EngineProfiler

    async def start_profile(self, directory: str | os.PathLike[str]) -> None:
        """Profile the engine's steps from now on. Raises ValueError when already profiling."""
        await self._on_engine_thread(lambda: self._profiler.start(directory))

    async def stop_profile(self) -> list[Path]:
        """Stop profiling and write the trace; returns its files. Raises ValueError when not profiling."""
        return await self._on_engine_thread(self._profiler.stop)

    async def _on_engine_thread(self, fn: Any) -> Any:  # pragma: no cover - AsyncEngine's
        raise NotImplementedError
