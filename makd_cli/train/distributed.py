"""Data-parallel training under ``torchrun``: the same ``makd train`` command, one process per GPU
(or per CPU group with gloo). Rank 0 writes the files; ``--batch-size`` stays the global batch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from makd_cli.errors import MakdError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        created = True
    return DistInfo(rank, world, local_rank, created)


def per_rank_batch(batch_size: int, info: DistInfo) -> int:
    if batch_size % info.world:
        raise MakdError(f"--batch-size {batch_size} is the global batch and must divide by the {info.world} processes")
    return batch_size // info.world


def all_reduce_sums(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if not info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.created and dist.is_initialized():
        dist.destroy_process_group()


def run_on_processes(device_name: str, out: str, train_one: Callable[[torch.device, DistInfo], dict]) -> dict:
    """Run ``train_one(device, info)`` in this process: its GPU under torchrun, and on rank 0 (the writer)
    under the run lock of ``out``, so a second job on the same -o stops at once."""
    from makd_cli.device import resolve_device
    from makd_cli.fileio import output_lock

    device = resolve_device(device_name)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        if not info.main:
            return train_one(device, info)
        with output_lock(Path(out) / "last.pt", "run"):
            return train_one(device, info)
    finally:
        shutdown(info)
