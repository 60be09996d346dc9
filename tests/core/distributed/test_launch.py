"""Launch pieces without a model: the rank layout, torchrun detection, the device and backend a rank
uses, and the step/control messages between two real gloo processes."""

from __future__ import annotations

import multiprocessing as mp
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from heron.distributed.launch import (
    backend_for,
    device_for,
    join_group,
    layout_of,
    open_store,
    torchrun_env,
)
from heron.distributed.protocol import (
    CONTROL,
    STEP,
    STOP,
    gather_results,
    recv_command,
    send_control,
    send_step,
    send_stop,
)
from heron.engine.model_runner import StepPlan
from heron.engine.setup import resolve_device

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def config(tp: int = 2, nnodes: int = 1, node_rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(tensor_parallel_size=tp, nnodes=nnodes, node_rank=node_rank)


@pytest.fixture(autouse=True)
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)


def test_layout_places_ranks_per_node() -> None:
    one = layout_of(config(4))
    assert one.single_node and one.per_node == 4 and one.local_workers == [1, 2, 3]
    node1 = layout_of(config(4, nnodes=2, node_rank=1))
    assert list(node1.node_ranks) == [2, 3] and not node1.single_node
    assert layout_of(config(4, nnodes=2)).local_workers == [1]


@pytest.mark.parametrize(("tp", "nnodes", "node", "message"), [
    (3, 2, 0, "does not divide over --nnodes 2"),
    (2, 2, 2, r"--node-rank 2 is outside 0\.\.1"),
    (0, 1, 0, "must be at least 1"),
])
def test_bad_layouts(tp: int, nnodes: int, node: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layout_of(config(tp, nnodes, node))


def test_torchrun_variables_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torchrun_env() is None
    for name, value in zip(TORCHRUN, ("1", "2", "1", "10.0.0.1", "29600"), strict=True):
        monkeypatch.setenv(name, value)
    layout = layout_of(config(2))
    assert layout.torchrun and layout.rank == 1 and layout.local_workers == []
    with pytest.raises(ValueError, match="torchrun started 2 processes but --tensor-parallel-size is 4"):
        layout_of(config(4))


def test_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="asks for a GPU but torch sees none"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="asks for a GPU"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_rank_device_and_backend() -> None:
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda", 0)) == "nccl"
    assert device_for(torch.device("cpu"), 3) == torch.device("cpu")
    assert device_for(torch.device("cuda"), 1) == torch.device("cuda", 1)
    assert device_for(torch.device("cuda", 2), 1) == torch.device("cuda", 3)


def _plan() -> StepPlan:
    return StepPlan(torch.tensor([5, 6, 7, 8]), torch.tensor([0, 1, 2, 9]), [3, 1], [3, 10],
                    torch.tensor([[4, 0], [1, 2]], dtype=torch.int32), torch.tensor([64, 65, 66, 41]),
                    [2, 3], [0], [1])


def _receiver(port: int, out: mp.Queue) -> None:
    group = join_group(1, 2, torch.device("cpu"), addr="127.0.0.1", port=port)
    got = []
    while True:
        cmd, arg = recv_command(group)
        if cmd == STEP:
            got.append(("step", arg.input_ids.tolist(), arg.positions.tolist(), arg.query_lens, arg.seq_lens,
                        arg.block_tables.tolist(), str(arg.block_tables.dtype), arg.slot_mapping.tolist(),
                        arg.sample_rows, arg.full_reqs, arg.hidden_reqs))
        elif cmd == CONTROL:
            got.append(("control", *arg))
            gather_results({"echo": arg[1]}, group)
        elif cmd == STOP:
            break
    out.put(got)
    dist.destroy_process_group()


def test_step_and_control_messages_cross_processes() -> None:
    layout = layout_of(config(2))
    store = open_store(layout, "127.0.0.1", 0)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(store.port, out), daemon=True)
    proc.start()
    try:
        group = join_group(0, 2, torch.device("cpu"), store=store)
        send_step(_plan(), group)
        send_control("sleep", {"level": 2}, group)
        results = gather_results(None, group)
        send_stop(group)
        got = out.get(timeout=60)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        proc.join(30)
    assert results == [None, {"echo": {"level": 2}}]
    assert got == [
        ("step", [5, 6, 7, 8], [0, 1, 2, 9], [3, 1], [3, 10], [[4, 0], [1, 2]], "torch.int32", [64, 65, 66, 41],
         [2, 3], [0], [1]),
        ("control", "sleep", {"level": 2}),
    ]
    assert proc.exitcode == 0
