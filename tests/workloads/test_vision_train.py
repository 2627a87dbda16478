"""Vision end to end on CPU: torchrun + gloo + DDP, SIGKILL resume, SIGTERM -> checkpoint + 75.

Every run uses the tiny preset on the synthetic JPEG shards (decoded and augmented by the
real-image loader), 30 steps, a checkpoint every 10. Exactness
claims compare the logged float loss with ``==``: CPU runs are bit-for-bit reproducible for a
fixed seed, world size and thread count.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

MODULE = "workloads.vision.train"
ARGS = ["--preset", "tiny", "--max-steps", "30", "--checkpoint-every", "10", "--seed", "7",
        "--log-every", "10"]


def run_vision(wl, args, env, nproc=0, max_restarts=0, timeout=120):
    cmd = [sys.executable, "-m", MODULE, *args]
    if nproc:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    f"--max-restarts={max_restarts}", "-m", MODULE]
    return subprocess.run(cmd, env=env, cwd=wl.REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, wl):
    """An uninterrupted 2-process torchrun run."""
    d = tmp_path_factory.mktemp("vision-baseline")
    proc = run_vision(wl, [*ARGS, "--checkpoint-dir", str(d / "ckpt"), "--metrics-file",
                           str(d / "m.jsonl")], wl.base_env(d / "cache"), nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return d, proc, wl.read_metrics(d / "m.jsonl")


def test_torchrun_ddp_two_processes_loss_falls(baseline):
    d, proc, (steps, events) = baseline
    assert "world 2 on cpu, fp32" in proc.stdout and "not real data" in proc.stdout
    assert sorted(steps) == list(range(1, 31))
    first = sum(steps[s]["loss"] for s in range(1, 4)) / 3
    last = sum(steps[s]["loss"] for s in range(28, 31)) / 3
    assert last < first - 0.8, (first, last)
    assert steps[30]["images"] == 30 * 2 * 16 and steps[30]["images_per_s"] > 0
    assert steps[30]["mfu"] is None and 0.0 <= steps[30]["top1"] <= 1.0
    manifest = json.loads((d / "ckpt" / "step-00000030" / "MANIFEST.json").read_text())
    assert manifest["world_size"] == 2 and ".metadata" in manifest["files"]
    assert (d / "ckpt" / "latest").read_text() == "step-00000030"
    assert events[-1]["event"] == "done"


def test_sigkill_one_worker_resumes_exactly(baseline, tmp_path, wl):
    """Rank 1 is SIGKILLed after step 15; torchrun restarts both workers, which resume from the
    step-10 checkpoint (model, SGD momentum, BatchNorm statistics, data position) and log the
    very same losses as the uninterrupted run."""
    env = wl.base_env(tmp_path / "cache", TRAINYARD_FAULT_KILL_STEP="15",
                      TRAINYARD_FAULT_KILL_RANK="1")
    proc = run_vision(wl, [*ARGS, "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file",
                           str(tmp_path / "m.jsonl")], env, nproc=2, max_restarts=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(exitcode: -9) local_rank: 1" in proc.stderr  # torchrun saw the SIGKILL
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    assert [e["step"] for e in events if e["event"] == "resume"] == [10]
    _, _, (base, _) = baseline
    assert steps[30]["loss"] == base[30]["loss"]
    assert all(steps[s]["loss"] == base[s]["loss"] for s in range(11, 31))


def test_sigkill_of_a_single_process_with_workers_resumes_exactly(tmp_path, wl):
    """One process decoding in 2 DataLoader workers, killed after step 15, run again: it
    resumes at step 10's data position and logs the very losses of an uninterrupted run (with
    no workers at all: batches do not depend on the worker count)."""
    def run(name, workers, **env):
        d = tmp_path / name
        args = [*ARGS, "--workers", str(workers), "--checkpoint-dir", str(d / "ckpt"),
                "--metrics-file", str(d / "m.jsonl")]
        return run_vision(wl, args, wl.base_env(tmp_path / "cache", **env)), d

    base, bd = run("base", 0)
    assert base.returncode == 0, base.stderr
    killed, kd = run("killed", 2, TRAINYARD_FAULT_KILL_STEP="15")
    assert killed.returncode == -9
    again, _ = run("killed", 2)
    assert again.returncode == 0, again.stderr
    steps, events = wl.read_metrics(kd / "m.jsonl")
    assert [e["step"] for e in events if e["event"] == "resume"] == [10]
    ref, _ = wl.read_metrics(bd / "m.jsonl")
    assert all(steps[s]["loss"] == ref[s]["loss"] for s in range(1, 31))


@pytest.mark.parametrize("nproc", [0, 2], ids=["python", "torchrun"])
def test_sigterm_saves_a_checkpoint_and_exits_75(nproc, tmp_path, wl):
    """Under torchrun the workers agree on the step to stop at (the flag rides in the per-step
    all-reduce), save one checkpoint and exit 75; torchrun itself, signalled, exits 1."""
    metrics = tmp_path / "m.jsonl"
    args = ["--preset", "tiny", "--max-steps", "100000", "--checkpoint-every", "100000",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", str(metrics)]
    cmd = [sys.executable, "-m", MODULE, *args]
    if nproc:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    "-m", MODULE]
    proc = subprocess.Popen(cmd, cwd=wl.REPO, env=wl.base_env(tmp_path / "cache"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (metrics.exists() and '"loss"' in metrics.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "no step logged"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (1 if nproc else 75), err
    steps, events = wl.read_metrics(metrics)
    (preempted,) = [e for e in events if e["event"] == "preempted"]
    stop = preempted["step"]
    assert preempted["exit_code"] == 75 and max(steps) == stop
    assert (tmp_path / "ckpt" / "latest").read_text() == f"step-{stop:08d}"
    assert (tmp_path / "ckpt" / f"step-{stop:08d}" / "MANIFEST.json").is_file()
    assert "SIGTERM received" in out and "checkpoint saved" in out
