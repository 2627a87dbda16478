"""workloads.common.launch: torchrun with the exit code a Kubernetes podFailurePolicy reads.

The SIGTERM path (torchrun signalled, workers save and exit 75) runs end to end in
test_llm_train.py; here: the decision itself, the workers' exit records, and the path of a node
whose workers stopped because *another* node was interrupted (torchrun not signalled, its
workers exit 75), next to a plain crash.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from workloads.common.cli import EXIT_PREEMPTED
from workloads.common.launch import exit_code
from workloads.common.preemption import EXIT_DIR_ENV, record_exit, recorded_exits


@pytest.mark.parametrize("recorded, failed, signalled, expected", [
    ({0: 75, 1: 75}, {}, 15, 75),     # SIGTERM, every worker saved and said so
    ({0: 75}, {}, 15, 75),            # one said so: the save is collective, it is complete
    ({}, {}, 15, 143),                # SIGTERM, nobody saved (killed after the timeout)
    ({}, {}, 2, 130),                 # SIGINT
    ({}, {1: 75}, None, 75),          # another node was interrupted: our workers stopped, saved
    ({}, {0: 75, 1: -15}, None, 75),  # torchrun terminated the slower rank after the first exit
    ({}, {0: 1}, None, 1),            # a crash
    ({}, {0: -9}, None, 1),           # a worker SIGKILLed (OOM killer)
])
def test_exit_code(recorded, failed, signalled, expected):
    assert exit_code(recorded, failed, signalled) == expected


def test_exit_records_round_trip(tmp_path, monkeypatch):
    monkeypatch.delenv(EXIT_DIR_ENV, raising=False)
    record_exit(75, 0)  # outside the launcher: nothing to write, no error
    monkeypatch.setenv(EXIT_DIR_ENV, str(tmp_path))
    record_exit(EXIT_PREEMPTED, 0)
    record_exit(EXIT_PREEMPTED, 3)
    (tmp_path / "rank-x").write_text("75")  # not a record
    assert recorded_exits(tmp_path) == {0: 75, 3: 75}
    monkeypatch.setenv(EXIT_DIR_ENV, str(tmp_path / "gone"))
    record_exit(75, 1)  # the launcher's directory vanished: still no error


@pytest.mark.parametrize("worker_exit, expected", [(75, 75), (3, 1)],
                         ids=["workers-preempted", "worker-crashed"])
def test_launcher_maps_the_workers_exit(worker_exit, expected, wl):
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.common.launch", "--standalone", "--nproc-per-node=2",
         "--no-python", "sh", "-c", f"exit {worker_exit}"],
        cwd=wl.REPO, env=wl.base_env(wl.REPO), capture_output=True, text=True, timeout=60)
    assert proc.returncode == expected, proc.stderr
    if expected == 1:
        assert "ChildFailedError" in proc.stderr or "exitcode" in proc.stderr  # torchrun's report
    else:
        assert "preempted): exit 75" in proc.stderr
