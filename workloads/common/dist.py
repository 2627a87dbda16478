"""Distributed setup from torchrun's environment, rank-0 printing and seeding.

One function, ``setup_distributed()``, reads what torchrun (or a Kubeflow TrainJob, which runs
torchrun) exports: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT. Without them the process runs
alone and no process group is created, so ``python -m workloads.llm.train`` works on a laptop.
Backend: NCCL when CUDA is available and requested, gloo otherwise.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from workloads.common.cli import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    """Global rank (RANK); 0 when run without torchrun."""
    local_rank: int = 0
    """Rank on this node (LOCAL_RANK); picks the GPU."""
    world_size: int = 1
    """Number of processes in the job (WORLD_SIZE)."""
    device: torch.device = torch.device("cpu")
    """Device this rank computes on."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_INFO = DistInfo()


def env_world_size() -> int:
    """WORLD_SIZE from torchrun's environment (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(device: str = "auto") -> torch.device:
    """The device this process will compute on, before any process group exists: ``device``
    "auto" (CUDA if present), "cpu" or "cuda"; on CUDA the GPU is LOCAL_RANK's. ConfigError
    (naming --device) when CUDA is asked for and absent."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was requested but CUDA is not available "
                                      f"(torch {torch.__version__}); use --device cpu or auto")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def setup_distributed(device: str = "auto") -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (idempotent).

    ``device`` is "auto" (CUDA if present), "cpu" or "cuda". Sets the current CUDA device to
    LOCAL_RANK. A process group is created only when WORLD_SIZE > 1.
    """
    global _INFO
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = env_world_size()
    dev = resolve_device(device)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"device_id": dev} if use_cuda else {}
        # torchrun --max-restarts: in torch 2.13 restarted workers can reach the same agent
        # TCPStore as the failed attempt and read its stale gloo/NCCL addresses ("Connection
        # refused" at init). Namespacing the store by restart count keeps attempts apart.
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"trainyard/attempt-{attempt}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size,
                                **kwargs)
    _INFO = DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)
    return _INFO


def dist_info() -> DistInfo:
    """The DistInfo from the last ``setup_distributed()`` (single CPU process before that)."""
    return _INFO


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed(device: str = "auto") -> Iterator[DistInfo]:
    """``setup_distributed(device)`` for the body of a ``with``, torn down however it ends."""
    info = setup_distributed(device)
    try:
        yield info
    finally:
        teardown_distributed()


def barrier(group: dist.ProcessGroup | None = None) -> None:
    if dist.is_initialized():
        dist.barrier(group=group)


def all_gather_object(obj: object, group: dist.ProcessGroup | None = None) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def broadcast_object(obj: object, src: int = 0, group: dist.ProcessGroup | None = None) -> object:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def print0(*args: object, **kwargs: object) -> None:
    """``print`` on global rank 0 only, flushed (logs from torchrun interleave otherwise)."""
    if _INFO.rank == 0:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)  # type: ignore[call-overload]


def eprint0(*args: object) -> None:
    if _INFO.rank == 0:
        print(*args, file=sys.stderr, flush=True)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices) identically on every rank.

    Identical seeds on every rank give identical initial weights before FSDP shards them. With
    ``deterministic`` the deterministic kernels are requested (CPU runs are then bit-for-bit
    reproducible for a fixed seed, world size and thread count).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
