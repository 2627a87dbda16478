"""torchrun, exiting 75 when its workers stopped for a preemption and saved.

    python -m workloads.common.launch --nproc-per-node 8 --shutdown-timeout 90 \\
        -m workloads.llm.train --preset 1b --checkpoint-dir s3://B/ckpt/run1

Every argument goes to torchrun (``torch.distributed.run``, in this process: the same flags,
the same ``PET_*`` environment the Kubeflow Trainer sets). Only the exit code differs. torchrun
exits 1 when it was sent SIGTERM or when a worker exited non-zero, so a Kubernetes Job cannot
tell a clean preemption from a crash. Here:

- 75 (``EXIT_PREEMPTED``) when a worker exited 75: the job stopped at a step boundary and its
  checkpoint is complete (the save is collective, so one rank past it means all are). The
  rendered TrainJob's podFailurePolicy turns that into a restart that does not count against
  the JobSet's maxRestarts (components/services/trainjob.py).
- 128 + signal (143 for SIGTERM) when torchrun was signalled and no worker reported a save
  (they were killed after ``--shutdown-timeout``, or the signal came before training began).
- torchrun's own behaviour otherwise (0 done, 1 a crash, with its error summary).

Workers report through files in a private directory (``$TRAINYARD_EXIT_DIR``), because torchrun
keeps its workers' exit codes to itself when it is signalled.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

from workloads.common.cli import EXIT_PREEMPTED
from workloads.common.preemption import EXIT_DIR_ENV, recorded_exits

SHUTDOWN_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
"""torchrun's --shutdown-timeout from the environment (torch 2.13 has the option; releases
before pytorch/pytorch#172596 do not); the rendered TrainJob sets it."""


def torch_version() -> str:
    import torch

    return torch.__version__


def exit_code(recorded: dict[int, int], failed: dict[int, int], signalled: int | None) -> int:
    """The launcher's exit code from what the workers recorded (rank -> code), the failures
    torchrun reported (rank -> exit code, negative for a signal) and the signal torchrun got."""
    if EXIT_PREEMPTED in recorded.values() or EXIT_PREEMPTED in failed.values():
        return EXIT_PREEMPTED
    if signalled is not None:
        return 128 + signalled
    return 1


def main(argv: list[str] | None = None) -> int:
    import os

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not hasattr(args, "shutdown_timeout") and os.environ.get(SHUTDOWN_ENV):
        print(f"launch: warning: torch {torch_version()} ignores {SHUTDOWN_ENV}: torchrun gives "
              "the workers 30 s after SIGTERM (a torch with --shutdown-timeout takes the budget)",
              file=sys.stderr, flush=True)
    exits = tempfile.mkdtemp(prefix="trainyard-exits-")
    os.environ[EXIT_DIR_ENV] = exits  # the workers inherit torchrun's environment
    try:
        run(args)
        return 0
    except SignalException as e:
        code = exit_code(recorded_exits(exits), {}, int(e.sigval))
    except ChildFailedError as e:
        failed = {rank: f.exitcode for rank, f in e.failures.items()}
        code = exit_code(recorded_exits(exits), failed, None)
        if code != EXIT_PREEMPTED:
            print(e.format_msg(), file=sys.stderr, flush=True)  # torchrun's crash summary
    finally:
        shutil.rmtree(exits, ignore_errors=True)
    if code == EXIT_PREEMPTED:
        print(f"launch: workers stopped after a checkpoint (preempted): exit {code}",
              file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
