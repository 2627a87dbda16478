"""Spot-drain handling: SIGTERM asks the job to stop at the next step boundary.

The handler only sets a flag. The training loop checks it once per step, after folding it into
its per-step all-reduce so every rank stops at the *same* step (torchrun forwards SIGTERM to all
workers, but not at the same instant), saves a checkpoint and exits with ``EXIT_PREEMPTED``
(75, see ``workloads.common.cli``) so torchrun / the Job restarts it and it resumes.

Time budget: EC2 gives a 2-minute spot notice; the kubelet sends SIGTERM to the pod (torchrun),
torchrun forwards it to the workers and waits up to its shutdown timeout (30 s by default)
before SIGKILL; the pod's terminationGracePeriodSeconds caps the whole. One step plus one
checkpoint has to fit in that window.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


class PreemptionFlag:
    """Installs a SIGTERM handler; ``requested`` turns True when the signal arrives."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def maybe_inject_fault(step: int, rank: int, world_size: int) -> None:
    """**Tests only**: SIGKILL this process right after step ``TRAINYARD_FAULT_KILL_STEP`` if it
    is rank ``TRAINYARD_FAULT_KILL_RANK`` (default: the last rank), on torchrun's first attempt
    only (restart count 0), so the restarted job runs through. Proves exact resume."""
    kill_step = int(os.environ.get("TRAINYARD_FAULT_KILL_STEP", "0"))
    if not kill_step or step != kill_step:
        return
    target = int(os.environ.get("TRAINYARD_FAULT_KILL_RANK", str(world_size - 1)))
    if rank == target and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        os.kill(os.getpid(), signal.SIGKILL)
