"""torchrun / DDP plumbing: process group from the environment, reductions, replica fingerprints.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised with NCCL on CUDA and gloo on the CPU;
each rank uses ``cuda:LOCAL_RANK``. Rank 0 alone writes logs and checkpoints; every rank reads the data cache
(built once under a file lock).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import fail


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    #: True when this process initialised the group (and so destroys it at the end).
    owned: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise fail(name, "an integer (set by torchrun)", repr(raw), "Launch with torchrun or unset it.") from None


def init_from_env(device_type: str) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1 (idempotent); single process otherwise."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    local = _env_int("LOCAL_RANK", 0)
    owned = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        owned = True
    return DistInfo(world_size=dist.get_world_size(), rank=dist.get_rank(), local_rank=local, owned=owned)


def shutdown(info: DistInfo) -> None:
    if info.owned and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(t: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum or max) when distributed; identity otherwise."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(value: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's boolean on every rank."""
    if not info.enabled:
        return value
    t = torch.tensor([1.0 if value else 0.0], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


@torch.no_grad()
def fingerprint(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A float64 summary of a list of tensors (sum and position-weighted sum of each); equal tensors give
    bit-identical fingerprints, so comparing them across ranks detects diverged replicas."""
    parts = []
    for t in tensors:
        x = t.detach().double().reshape(-1)
        w = torch.arange(1, x.numel() + 1, device=x.device, dtype=torch.float64).remainder_(97.0).add_(1.0)
        parts.append(torch.stack([x.sum(), (x * w).sum()]))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def replicas_identical(tensors: list[torch.Tensor], info: DistInfo) -> bool:
    """True when every rank holds bit-identical ``tensors`` (always True in a single process)."""
    if not info.enabled:
        return True
    fp = fingerprint(tensors)
    gathered = [torch.empty_like(fp) for _ in range(info.world_size)]
    dist.all_gather(gathered, fp)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])
