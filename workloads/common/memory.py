"""Will the run fit? The estimated training memory against what the device has, before allocating.

Each workload's config estimates the bytes one process needs (``memory_estimate``: parameters,
gradients, optimizer states and activations, each formula in its docstring); ``check_fits``
compares it with what is free where the process will run and refuses with a ``ConfigError``
(exit 2, one line) when it does not fit, instead of an out-of-memory kill minutes later:

- CUDA: free memory of this rank's GPU (``torch.cuda.mem_get_info``).
- CPU: ``MemAvailable`` of /proc/meminfo, or less where a cgroup (a container's memory limit)
  allows less; every process of the node (torchrun's LOCAL_WORLD_SIZE) needs its own share.

The estimate leaves out the allocator's caching and fragmentation, temporary buffers of
backward and FSDP's all-gather buffers, so a run that passes may still be tight; one refused is
at least that far over. ``TRAINYARD_SKIP_MEMORY_CHECK=1`` skips the check. Torch-free at import
(the configs use ``MemoryEstimate``); torch is imported only to ask a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workloads.common.cli import ConfigError

if TYPE_CHECKING:
    import torch

    from workloads.common.config import RunConfig

GIB = 2**30
SKIP_ENV = "TRAINYARD_SKIP_MEMORY_CHECK"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs, by part."""

    parts: tuple[tuple[str, float], ...]
    """(name, bytes) pairs, e.g. ("params", 4.9e9), in the order they are printed."""
    formula: str
    """The formula, short enough for the error line."""
    hint: str
    """How to need less (the flags to lower)."""

    @property
    def total(self) -> float:
        return sum(b for _, b in self.parts)

    def describe(self) -> str:
        return " + ".join(f"{name} {b / GIB:.2f}" for name, b in self.parts) + " GiB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_available() -> int | None:
    """Memory this cgroup may still use (limit minus anonymous memory), None without a limit."""
    v2 = Path("/sys/fs/cgroup")
    limit = _read_int(v2 / "memory.max")  # "max" (no limit) reads as None
    stat_file, anon_key = v2 / "memory.stat", "anon"
    if limit is None:
        v1 = v2 / "memory"
        limit = _read_int(v1 / "memory.limit_in_bytes")
        stat_file, anon_key = v1 / "memory.stat", "total_rss"
        if limit is None or limit >= 2**60:  # v1 writes "no limit" as a huge number
            return None
    try:
        stat = dict(line.split() for line in stat_file.read_text().splitlines())
        used = int(stat.get(anon_key, 0))
    except (OSError, ValueError):
        used = 0
    return max(limit - used, 0)


def cpu_available() -> tuple[int, str] | None:
    """(bytes available for new allocations, where that figure comes from), None if unknown."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_available()
    if cgroup is not None:
        candidates.append((cgroup, "the cgroup memory limit"))
    if not candidates:
        try:
            candidates.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                               "free physical pages"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(candidates)


def check_fits(estimate: MemoryEstimate | None, device: torch.device, what: str,
               flag: str = "--preset") -> None:
    """ConfigError naming ``flag`` when ``estimate`` exceeds what ``device`` has free."""
    if estimate is None or os.environ.get(SKIP_ENV) == "1":
        return
    need, procs = estimate.total, 1
    if device.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device)
        have = f"{torch.cuda.get_device_name(device)} has {free / GIB:.1f} GiB free of " \
               f"{total / GIB:.1f}"
    else:
        found = cpu_available()
        if found is None:
            return
        free, source = found
        procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes sharing this RAM
        need *= procs
        have = f"this machine has {free / GIB:.1f} GiB available ({source})"
    if need <= free:
        return
    each = f"{procs} processes, each " if procs > 1 else ""
    raise ConfigError(flag, f"{what} needs about {need / GIB:.1f} GiB to train on {device.type} "
                            f"({each}{estimate.describe()}; {estimate.formula}) but {have}; "
                            f"{estimate.hint}, or set {SKIP_ENV}=1 to try anyway")


def check_run_fits(cfg: RunConfig, what: str) -> None:
    """``check_fits`` for a workload config on the device it will run on, before anything is
    set up (no process group yet: every rank checks its own device)."""
    from workloads.common.dist import env_world_size, resolve_device

    device = resolve_device(cfg.device)
    check_fits(cfg.memory_estimate(env_world_size(), device.type == "cuda"), device, what)
