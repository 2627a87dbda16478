"""The run configuration every workload shares: steps, seed, checkpoints, metrics, device.

Torch-free, like the workload configs built on it: each workload's ``TrainConfig`` subclasses
``RunConfig`` and adds its model and optimizer fields, so the whole config stays one flat, typed
dataclass (field ``x_y`` is flag ``--x-y``) validated in ``__post_init__``. ``add_run_args``
declares the matching flags; ``from_flags`` turns a bad value into one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from workloads.common.cli import ConfigError, die, parse_s3_url

if TYPE_CHECKING:
    from workloads.common.memory import MemoryEstimate

DEVICES = ("auto", "cpu", "cuda")
C = TypeVar("C", bound="RunConfig")


@dataclass(frozen=True)
class RunConfig:
    """How long to train, where checkpoints and metrics go, and on what device."""

    max_steps: int = 200
    """Optimizer steps to train for; the cosine schedule ends here (default 200)."""
    seed: int = 0
    """Seed for weights, data order and any training randomness (default 0)."""
    checkpoint_dir: str | None = None
    """Directory, EFS/FSx mount or s3://bucket/prefix; resumed automatically (default: none)."""
    checkpoint_every: int = 100
    """Save every K steps, and always at the last step and on SIGTERM (default 100)."""
    keep_last: int = 3
    """Complete checkpoints to keep (default 3)."""
    async_checkpoint: bool | None = None
    """Write checkpoints in the background (dcp.async_save; default: on with CUDA, off on CPU)."""
    metrics_file: str | None = None
    """JSONL metrics path, appended to across restarts (default: none, stdout only)."""
    compile: bool | None = None
    """torch.compile the model or its blocks (default: on with CUDA, off on CPU)."""
    device: str = "auto"
    """auto (CUDA if present), cuda or cpu (default auto)."""
    log_every: int = 10
    """Print a human progress line every N steps (default 10)."""

    def __post_init__(self) -> None:
        check_positive(self, ("max_steps", "checkpoint_every", "keep_last", "log_every"))
        check_non_negative(self, ("seed",))
        if self.device not in DEVICES:
            raise ConfigError("--device", f"must be auto, cpu or cuda, got {self.device!r}")
        check_s3(self.checkpoint_dir, "--checkpoint-dir")

    def check_inputs(self) -> None:
        """Checks of the world outside the flags, before anything starts: the checkpoint
        directory writable (or creatable), on S3 credentials and the bucket usable; the metrics
        file writable."""
        if self.checkpoint_dir and self.checkpoint_dir.startswith("s3://"):
            from workloads.common.s3 import check_access

            check_access(self.checkpoint_dir, "--checkpoint-dir")
        elif self.checkpoint_dir:
            check_writable_dir(Path(self.checkpoint_dir), "--checkpoint-dir")
        if self.metrics_file:
            path = Path(self.metrics_file)
            if path.is_dir():
                raise ConfigError("--metrics-file", f"{self.metrics_file!r} is a directory")
            check_writable_dir(path.parent, "--metrics-file", file=path)

    def memory_estimate(self, world_size: int, cuda: bool) -> MemoryEstimate | None:
        """Bytes one process needs to train (``workloads.common.memory``); None: not checked."""
        return None

    def checkpoint_bytes(self, nodes: int) -> float | None:
        """Bytes one of ``nodes`` nodes writes for a checkpoint (what a save on SIGTERM has to
        get out within the Spot budget, components/services/trainjob.py); None: not estimated."""
        return None

    def step_flops(self) -> float | None:
        """Training FLOPs one rank computes per optimizer step; None: not estimated."""
        return None

    @classmethod
    def from_flags(cls: type[C], prog: str, **values: object) -> C:
        """``cls(**values)`` with its inputs checked; exits 2 with one line on stderr if bad."""
        try:
            cfg = cls(**values)
            cfg.check_inputs()
        except ConfigError as e:
            die(f"{prog}: error: {e}")
        return cfg


def add_run_args(p: argparse.ArgumentParser, d: RunConfig) -> None:
    """The ``RunConfig`` flags, defaults from ``d``, as their own group in ``--help``."""
    g = p.add_argument_group("run, checkpoint and metrics")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--checkpoint-dir", help="directory or s3://bucket/prefix; resumed if present")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="K")
    g.add_argument("--keep-last", type=int, default=d.keep_last, metavar="K",
                   help="complete checkpoints kept")
    g.add_argument("--async-checkpoint", action=argparse.BooleanOptionalAction, default=None,
                   help="background checkpoint writes (default: on with CUDA, off on CPU)")
    g.add_argument("--metrics-file", help="JSONL metrics (appended)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile (default: on with CUDA, off on CPU)")
    g.add_argument("--device", default=d.device, help="auto, cuda or cpu")
    g.add_argument("--log-every", type=int, default=d.log_every)


def flag(field_name: str) -> str:
    """The command-line flag of a config field: ``max_steps`` -> ``--max-steps``."""
    return "--" + field_name.replace("_", "-")


def check_positive(cfg: object, names: tuple[str, ...]) -> None:
    """ConfigError for the first of ``names`` set (not None) to a value <= 0."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(flag(name), f"must be > 0, got {value}")


def check_non_negative(cfg: object, names: tuple[str, ...]) -> None:
    """ConfigError for the first of ``names`` set (not None) to a value < 0."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ConfigError(flag(name), f"must be >= 0, got {value}")


def check_writable_dir(path: Path, flag_name: str, file: Path | None = None) -> None:
    """ConfigError unless ``path`` is a directory this process can write in, or can be created.

    Probes with a temporary file in ``path`` or its nearest existing ancestor, removed at once
    (``os.access`` is not enough: it says yes to root on a read-only mount). With ``file``, an
    existing file there must open for appending (nothing is written to it)."""
    shown = repr(str(file or path))
    existing = path.absolute()
    try:
        while not existing.exists():
            existing = existing.parent
    except OSError as e:
        raise ConfigError(flag_name, f"{shown}: cannot look up {str(existing)!r}: "
                                     f"{e.strerror}") from None
    if not existing.is_dir():
        where = "" if existing == path.absolute() else f": {str(existing)!r}"
        raise ConfigError(flag_name, f"{shown}{where} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        if file is not None:
            where = f"cannot be written: {str(existing)!r} is not writable"
        elif existing == path.absolute():
            where = "is not writable"
        else:
            where = f"cannot be created: {str(existing)!r} is not writable"
        raise ConfigError(flag_name, f"{shown} {where} ({e.strerror}); choose a directory this "
                                     "user can write to") from None
    if file is not None and file.exists():
        try:
            with open(file, "ab"):
                pass
        except OSError as e:
            raise ConfigError(flag_name, f"{shown} is not writable ({e.strerror})") from None


def check_s3(value: str | None, flag_name: str) -> None:
    """A value that starts like an S3 URL must be a well-formed one."""
    if value is not None and value.startswith("s3:"):
        if not value.startswith("s3://"):
            raise ConfigError(flag_name, f"{value!r} is not an s3:// URL")
        parse_s3_url(value, flag_name)
