"""Test a model plugin's tensor parallelism: the same plan at ``tp_size`` N must give tp 1's logits.

:func:`tp_run` spawns ``tp_size`` processes (``multiprocessing`` "spawn", one CPU thread each)
that join a gloo process group on ``tcp://127.0.0.1:<free port>`` (the default group, as in the
engine), build each checkpoint with ``ModelContext(tp_rank=r, tp_size=N)`` through
:class:`heron.testing.models.PagedRunner`, run :func:`heron.testing.models.run_plan` and send
rank 0's logits back. Several checkpoints share one start-up (spawning costs seconds per
process), so a test module builds all its tiny checkpoints first and runs them in one call.
:func:`compare_tp` / :func:`compare_tp_many` run tp 1 in this process and return the largest
absolute logit difference; a plugin author's test is then::

    path = tmp_path / "m"
    tiny_checkpoint(tiny_config("llama"), path)
    assert compare_tp(path, sizes=(2,))[2] < 1e-5  # fp32

A rank that fails sends its traceback, which is raised here as :class:`TensorParallelTestError`;
a rank that hangs (a collective the other rank never joins) ends at ``timeout``.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from heron.testing.models import MIXED_PLAN, VOCAB, PagedRunner, run_plan

__all__ = (
    "TensorParallelTestError",
    "compare_tp",
    "compare_tp_many",
    "free_port",
    "local_logits",
    "max_abs_diff",
    "tp_logits",
    "tp_run",
)

#: request id -> that request's logits for all its tokens, [n, vocab] (what :func:`run_plan` returns)
Logits = dict[str, torch.Tensor]


class TensorParallelTestError(RuntimeError):
    """A tensor-parallel rank failed (the message carries its traceback) or did not finish in time."""


@dataclass(frozen=True)
class _Job:
    """What every rank runs (picklable: it crosses to the spawned processes)."""

    paths: tuple[str, ...]
    plan: list[dict[str, int]]
    dtype: torch.dtype
    backend: str
    seed: int
    vocab: int
    model_impl: str
    timeout: float


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_one(job: _Job, path: str, rank: int, size: int) -> Logits:
    """Build ``path`` as rank ``rank`` of ``size`` and run the job's plan."""
    runner = PagedRunner.load(path, job.backend, job.dtype, job.model_impl, tp_rank=rank, tp_size=size)
    if size > 1 and not getattr(runner.model, "supports_tensor_parallel", False):
        raise TensorParallelTestError(f"{type(runner.model).__name__} does not declare supports_tensor_parallel.")
    return run_plan(runner, job.plan, job.vocab, job.seed)[1]


def _worker(rank: int, size: int, port: int, job: _Job, results: Any) -> None:
    """One rank: join the group, run every checkpoint, send rank 0's logits (numpy) then "done"."""
    torch.set_num_threads(1)  # the ranks share the machine's cores
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
            timeout=timedelta(seconds=job.timeout),
        )
        for index, path in enumerate(job.paths):
            logits = _run_one(job, path, rank, size)
            if rank == 0:
                results.put(("ok", index, {rid: t.float().numpy() for rid, t in logits.items()}))
        results.put(("done", rank, None))
    except BaseException:  # noqa: BLE001 - any failure goes back to the test, with its traceback
        results.put(("error", rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _collect(procs: list[Any], results: Any, count: int, timeout: float) -> list[Logits]:
    """Wait for every rank's "done" (or the first error); rank 0's logits per checkpoint."""
    out: dict[int, Logits] = {}
    done, deadline = 0, time.monotonic() + timeout
    while done < len(procs):
        try:
            kind, key, payload = results.get(timeout=1.0)
        except queue.Empty:
            dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead:
                raise TensorParallelTestError(f"tensor-parallel rank(s) {dead} died without a report.") from None
            if time.monotonic() > deadline:
                raise TensorParallelTestError(f"tensor-parallel ranks did not finish within {timeout:.0f} s.") from None
            continue
        if kind == "error":
            raise TensorParallelTestError(f"tensor-parallel rank {key} failed:\n{payload}")
        if kind == "ok":
            out[key] = {rid: torch.from_numpy(a) for rid, a in payload.items()}
        else:
            done += 1
    return [out[i] for i in range(count)]


def tp_run(
    paths: Sequence[Path | str],
    tp_size: int,
    *,
    plan: list[dict[str, int]] = MIXED_PLAN,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    seed: int = 0,
    vocab: int = VOCAB,
    model_impl: str = "auto",
    timeout: float = 300.0,
) -> list[Logits]:
    """Run ``plan`` on each checkpoint in ``paths`` with ``tp_size`` ranks (one process group for all).

    Args:
        paths: checkpoint directories (e.g. from :func:`heron.testing.models.tiny_checkpoint`).
        tp_size: ranks to spawn.
        plan: request -> new tokens per step (see :data:`heron.testing.models.MIXED_PLAN`).
        dtype: the model's dtype (equivalence tests use float32).
        backend: attention backend name (``"auto"``: the one the engine would pick).
        seed: seeds the plan's random tokens (use the same for the tp 1 reference).
        vocab: token ids are drawn below this.
        model_impl: as for :func:`heron.loader.build_model`.
        timeout: seconds for the whole run (also the gloo collective timeout).

    Returns:
        per checkpoint, rank 0's logits: request id -> [n, vocab] float32.

    Raises:
        TensorParallelTestError: a rank failed (its traceback is in the message) or timed out.
    """
    job = _Job(tuple(str(p) for p in paths), plan, dtype, backend, seed, vocab, model_impl, timeout)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, tp_size, port, job, results), daemon=True) for r in range(tp_size)]
    for p in procs:
        p.start()
    try:
        return _collect(procs, results, len(job.paths), timeout)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():  # a rank stuck in a collective after another failed
                p.terminate()
                p.join()


def tp_logits(path: Path | str, tp_size: int, **kw: Any) -> Logits:
    """Rank 0's logits for one checkpoint at ``tp_size`` ranks (keywords as for :func:`tp_run`)."""
    return tp_run([path], tp_size, **kw)[0]


def local_logits(
    path: Path | str,
    *,
    plan: list[dict[str, int]] = MIXED_PLAN,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    seed: int = 0,
    vocab: int = VOCAB,
    model_impl: str = "auto",
) -> Logits:
    """The tp 1 reference, in this process (no process group: every collective is the identity)."""
    runner = PagedRunner.load(path, backend, dtype, model_impl)
    return run_plan(runner, plan, vocab, seed)[1]


def max_abs_diff(got: Logits, want: Logits) -> float:
    """Largest absolute difference over every request's logits (same requests and shapes required)."""
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    worst = 0.0
    for rid, w in want.items():
        assert got[rid].shape == w.shape, (rid, tuple(got[rid].shape), tuple(w.shape))
        worst = max(worst, float((got[rid].float() - w.float()).abs().max()))
    return worst


def compare_tp(path: Path | str, sizes: Sequence[int] = (2,), **kw: Any) -> dict[int, float]:
    """tp size -> largest absolute logit difference from tp 1 (keywords as for :func:`tp_run`)."""
    local_kw = {k: v for k, v in kw.items() if k != "timeout"}
    want = local_logits(path, **local_kw)
    return {n: max_abs_diff(tp_logits(path, n, **kw), want) for n in sizes}


def compare_tp_many(paths: Sequence[Path | str], tp_size: int = 2, **kw: Any) -> list[float]:
    """Per checkpoint, the largest absolute logit difference of ``tp_size`` ranks from tp 1.

    The ranks start once for all ``paths`` (keywords as for :func:`tp_run`).
    """
    local_kw = {k: v for k, v in kw.items() if k != "timeout"}
    got = tp_run(paths, tp_size, **kw)
    return [max_abs_diff(g, local_logits(p, **local_kw)) for g, p in zip(got, paths, strict=True)]
