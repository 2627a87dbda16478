"""The timing harness both benchmarks share: flags, untimed warm-up, timed steps, peak memory.

A workload's ``bench`` builds its model and step exactly as ``train`` does, hands the step to
``time_steps`` and adds its own fields (rates, FLOPs, MFU) between ``record``'s common head and
tail. torch is imported only inside the functions that need it, so a bad flag exits 2 fast.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workloads.common.cli import die


def parse_bench_args(p: argparse.ArgumentParser, argv: list[str] | None, steps: int, warmup: int,
                     gpu_preset: str) -> argparse.Namespace:
    """Adds ``--steps``/``--warmup`` (with these defaults), parses, checks them (exit 2 if bad)
    and resolves ``--preset``: ``gpu_preset`` when CUDA is there to use, else ``tiny``."""
    p.add_argument("--steps", type=int, default=steps, help=f"timed steps (default {steps})")
    p.add_argument("--warmup", type=int, default=warmup,
                   help=f"untimed steps first (default {warmup})")
    args = p.parse_args(argv)
    if args.steps <= 0:
        die(f"{p.prog}: error: --steps: must be > 0, got {args.steps}")
    if args.warmup < 0:
        die(f"{p.prog}: error: --warmup: must be >= 0, got {args.warmup}")
    if args.preset is None:
        import torch

        cuda = args.device != "cpu" and torch.cuda.is_available()
        args.preset = gpu_preset if cuda else "tiny"
    return args


@dataclass(frozen=True)
class Timing:
    """What ``time_steps`` measured."""

    elapsed_s: float
    """Wall time of the timed steps (the device synchronised at both ends)."""
    final_loss: float
    """The last step's loss (reading it forces the step to complete)."""
    peak_mem_gib: float
    """CUDA: max allocated during the timed steps; CPU: the process's max RSS."""
    peak_mem_source: str
    """``cuda_max_allocated`` or ``process_max_rss``."""


def time_steps(step: Callable[[int], Any], warmup: int, steps: int, cuda: bool) -> Timing:
    """Runs ``step(n)`` (returning the loss tensor) for n = 1..warmup untimed, then ``steps``
    more timed."""
    import resource
    import time

    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for n in range(1, warmup + 1):
        step(n)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for n in range(warmup + 1, warmup + steps + 1):
        loss = step(n)
    loss_value = float(loss)  # forces completion of the last step
    sync()
    elapsed = time.perf_counter() - t0
    if cuda:
        return Timing(elapsed, loss_value, torch.cuda.max_memory_allocated() / 2**30,
                      "cuda_max_allocated")
    # whole-process high-water mark (KiB on Linux)
    return Timing(elapsed, loss_value, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "process_max_rss")


def record(preset: str, info, timing: Timing, fields: dict) -> dict:
    """The result line: preset, device, GPU and world size, then ``fields``, then memory, loss and
    the software."""
    import torch

    cuda = info.device.type == "cuda"
    return {
        "preset": preset, "device": info.device.type,
        "gpu": torch.cuda.get_device_name(info.device) if cuda else None,
        "world_size": info.world_size, **fields,
        "peak_mem_gib": timing.peak_mem_gib, "peak_mem_source": timing.peak_mem_source,
        "final_loss": timing.final_loss, "torch": torch.__version__,
        "cpu_threads": None if cuda else torch.get_num_threads(),
    }


def print_result(result: dict | None) -> int:
    """Prints the result as one JSON line (rank 0 only: other ranks pass None); exit code 0."""
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0
