"""dist.py: a 2-process gloo group via mp.spawn; torchrun environment handling."""
import json
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zipformer_rwkv.training.dist import cleanup_dist, get_rank, get_world_size, is_torchrun, setup_dist
from zipformer_rwkv.utils import MetricsTracker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    setup_dist(rank, world_size, master_port=port)
    try:
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        tracker = MetricsTracker()
        tracker["frames"] = 10 * (rank + 1)
        tracker["loss"] = float(rank)
        tracker.reduce("cpu")
        result = {"rank": get_rank(), "world_size": get_world_size(), "sum": t.item(),
                  "backend": dist.get_backend(), "frames": tracker["frames"],
                  "loss": tracker["loss"]}
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        cleanup_dist()


def test_two_process_gloo_all_reduce(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r == {"rank": rank, "world_size": 2, "sum": 3.0, "backend": "gloo",
                     "frames": 30.0, "loss": 1.0}


def test_torchrun_environment(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not is_torchrun() and get_rank() == 0 and get_world_size() == 1
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_torchrun() and get_rank() == 3 and get_world_size() == 4


def test_setup_dist_reads_torchrun_env(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    setup_dist(rank=5, world_size=9, master_port=1)  # arguments are ignored under torchrun
    try:
        assert dist.get_rank() == 0 and dist.get_world_size() == 1
    finally:
        cleanup_dist()
    assert not dist.is_initialized()
