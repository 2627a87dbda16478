"""Spot-drain handling: SIGTERM asks the job to stop at the next step boundary.

The handler only sets a flag. The training loop exchanges it every step (a small gloo
all-reduce on CPU, started before the step and read after it: no GPU sync; see
``workloads.common.loop``) so every rank stops at the *same* step (torchrun forwards SIGTERM to
the workers of its own node only; ranks on other nodes learn it from the exchange), saves a
checkpoint and exits with ``EXIT_PREEMPTED`` (75, see ``workloads.common.cli``) so the
TrainJob restarts and resumes. Worst case: the rest of the step the signal arrived in, one more
step, then the save.

Under torchrun the process Kubernetes sees is torchrun, which exits 1 whatever its workers did.
``workloads.common.launch`` runs torchrun and exits 75 when the workers stopped this way: each
worker that exits 75 records it in ``$TRAINYARD_EXIT_DIR`` (``record_exit``), which the
launcher creates and reads back.

Time budget (components/services/trainjob.py ``interruption_budget``): EC2 gives a 2-minute Spot notice;
Karpenter (or the managed node group) evicts the pod, the kubelet sends SIGTERM to torchrun,
torchrun forwards it to the workers and waits ``--shutdown-timeout`` seconds before SIGKILL; the
pod's terminationGracePeriodSeconds caps the whole. Up to two steps plus one checkpoint have to
fit in torchrun's timeout.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

EXIT_DIR_ENV = "TRAINYARD_EXIT_DIR"
"""Directory (set by ``workloads.common.launch``) where workers record a preempted exit."""


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


def record_exit(code: int, rank: int) -> None:
    """Note this worker's exit code where the launcher reads it (no-op outside the launcher).
    Called only once the checkpoint is complete, so a recorded 75 means "saved"."""
    where = os.environ.get(EXIT_DIR_ENV)
    if not where:
        return
    try:
        (Path(where) / f"rank-{rank}").write_text(str(code))
    except OSError:  # the launcher's directory is gone: nothing to tell
        pass


def recorded_exits(where: str | Path) -> dict[int, int]:
    """rank -> exit code, as ``record_exit`` left them in ``where``."""
    out = {}
    for path in Path(where).glob("rank-*"):
        try:
            out[int(path.name[len("rank-"):])] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return out


def maybe_inject_fault(step: int, rank: int, world_size: int,
                       preempt: PreemptionFlag | None = None) -> None:
    """**Tests only**, on torchrun's first attempt (restart count 0), right after ``step``:

    - ``TRAINYARD_FAULT_KILL_STEP``: SIGKILL this process if it is rank
      ``TRAINYARD_FAULT_KILL_RANK`` (default: the last rank). Proves exact resume after a crash.
    - ``TRAINYARD_FAULT_TERM_STEP``: rank 0 sends SIGTERM to its parent (torchrun, as the
      kubelet signals a container's main process on a drain) and waits until torchrun has
      forwarded it here, so the run stops after exactly the next step. Proves the
      SIGTERM -> save -> exit 75 -> resume chain at a known step.
    """
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    kill_step = int(os.environ.get("TRAINYARD_FAULT_KILL_STEP", "0"))
    if kill_step and step == kill_step and first_attempt:
        target = int(os.environ.get("TRAINYARD_FAULT_KILL_RANK", str(world_size - 1)))
        if rank == target:
            os.kill(os.getpid(), signal.SIGKILL)
    term_step = int(os.environ.get("TRAINYARD_FAULT_TERM_STEP", "0"))
    under_torchrun = "TORCHELASTIC_RESTART_COUNT" in os.environ
    if term_step and step == term_step and first_attempt and under_torchrun and rank == 0:
        os.kill(os.getppid(), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while preempt is not None and not preempt.requested and time.monotonic() < deadline:
            time.sleep(0.01)
