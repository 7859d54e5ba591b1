"""torch.distributed set-up for `mp.spawn` (icefall's `--world-size`) and `torchrun` launches.

- `mp.spawn(run, args=(world_size, args), nprocs=world_size)` calls `run(rank, world_size, args)`,
  which calls `setup_dist(rank, world_size, params.master_port)`.
- Under `torchrun`, RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT come from the
  environment and override the arguments.
Backend: nccl when CUDA is available, else gloo (CPU).
"""
import datetime
import logging
import os
from typing import Optional

import torch
import torch.distributed as dist

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_torchrun() -> bool:
    """True when launched by torchrun (RANK, WORLD_SIZE and LOCAL_RANK are set)."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def setup_dist(
    rank: int,
    world_size: int,
    master_port: Optional[int] = None,
    backend: Optional[str] = None,
    master_addr: str = "localhost",
    timeout_s: float = 1800.0,
) -> None:
    """Initialise the default process group and, on CUDA, select this process's GPU.

    Args:
      rank, world_size: from mp.spawn (ignored under torchrun, which sets them in the env).
      master_port: rendezvous port (icefall `--master-port`, default 12354); under torchrun
        MASTER_PORT from the environment wins.
      backend: "nccl" or "gloo"; default nccl if CUDA is available, else gloo.
      master_addr: used if MASTER_ADDR is not set.
      timeout_s: collective timeout in seconds.
    Raises:
      ValueError: rank outside [0, world_size), or nccl requested without CUDA.
    """
    if is_torchrun():
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
    else:
        local_rank = rank
        os.environ["MASTER_PORT"] = str(master_port if master_port is not None else 12354)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    os.environ.setdefault("MASTER_ADDR", master_addr)
    os.environ.setdefault("MASTER_PORT", str(master_port if master_port is not None else 12354))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend nccl needs CUDA; use gloo on CPU")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logging.debug(f"process group ready: rank {rank}/{world_size}, backend {backend}")


def cleanup_dist() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    """Rank in the process group; from RANK under torchrun before init; else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ["RANK"]) if is_torchrun() else 0


def get_world_size() -> int:
    """World size of the process group; from WORLD_SIZE under torchrun before init; else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ["WORLD_SIZE"]) if is_torchrun() else 1


def get_local_rank() -> int:
    """LOCAL_RANK under torchrun, else the global rank (single-node mp.spawn)."""
    return int(os.environ["LOCAL_RANK"]) if is_torchrun() else get_rank()
