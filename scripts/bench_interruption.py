"""A Spot interruption on CPU, through the real launcher, torchrun and checkpoint path: (a) SIGTERM
-> process exit, (b) restart -> first resumed step. N runs per preset; medians.

    python scripts/bench_interruption.py                      # tiny and 125m, 3 runs each
    python scripts/bench_interruption.py --presets tiny --runs 5 --json out/interruption.json

Each run starts `python -m workloads.common.launch --standalone --nproc-per-node 2
-m workloads.llm.train` (what a rendered TrainJob runs, 2 gloo workers, synthetic tokens,
checkpoints to a local directory), waits for a few steps, sends SIGTERM to the launcher (as the
kubelet does to a container's main process on a drain) and times until it exits (75 expected,
with a complete checkpoint); then starts the same command again and times until the first step
after the checkpoint is logged. 125m runs at micro-batch 1 x 128 tokens to keep a CPU step near
a second (the checkpoint, 12 bytes per parameter, is the same size as at any batch).

Prints one line per preset and writes every run's figures as JSON (--json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"tiny": [], "125m": ["--micro-batch-size", "1", "--seq-len", "128"]}
"""Per preset: flags beyond the preset's defaults (125m's default 32 x 1024 needs ~40 GiB on CPU)."""
POLL_S = 0.01


def command(preset: str, ckpt: Path, metrics: Path) -> list[str]:
    return [sys.executable, "-m", "workloads.common.launch", "--standalone", "--nproc-per-node=2",
            "-m", "workloads.llm.train", "--preset", preset, *SHAPES.get(preset, []),
            "--data", "synthetic", "--max-steps", "1000000", "--checkpoint-every", "1000000",
            # the trainer writes step records at log points: every step here, so the bench
            # sees each step (the SIGTERM path does not depend on it: a CPU all-reduce per step)
            "--log-every", "1", "--checkpoint-dir", str(ckpt),
            "--metrics-file", str(metrics)]


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            break
    return out


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """The trainer, its stderr (torchrun's log) to a file: a pipe nobody reads could fill up."""
    with log.open("a") as err:
        # Its own process group, so a failed run can kill the workers too, not only torchrun.
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def kill_all(proc: subprocess.Popen) -> None:
    """The launcher and its workers (a killed torchrun leaves its workers running)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for(path: Path, proc: subprocess.Popen, done, timeout: float, log: Path) -> float:
    """Poll the metrics file until ``done(records)``; the wall time it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(records(path)):
            return time.time()
        if proc.poll() is not None:
            raise RuntimeError(f"trainer exited {proc.returncode} early:\n{log.read_text()}")
        time.sleep(POLL_S)
    raise RuntimeError(f"timed out after {timeout}s waiting on {path}")


def steps_after(n: int):
    return lambda recs: any(r.get("step", 0) > n and "loss" in r for r in recs)


def one_run(preset: str, work: Path, env: dict, warm_steps: int, timeout: float) -> dict:
    ckpt, metrics, log = work / "ckpt", work / "m.jsonl", work / "stderr.txt"
    cmd = command(preset, ckpt, metrics)
    # -- first start, then SIGTERM after `warm_steps` steps ---------------------------------
    t_start = time.time()
    proc = start(cmd, env, log)
    try:
        t_first = wait_for(metrics, proc, steps_after(0), timeout, log)
        wait_for(metrics, proc, steps_after(warm_steps - 1), timeout, log)
        t_term = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
        t_exit = time.time()
    finally:
        if proc.poll() is None:
            kill_all(proc)
    if proc.returncode != 75:
        raise RuntimeError(f"expected exit 75, got {proc.returncode}:\n{log.read_text()}")
    (pre,) = [r for r in records(metrics) if r.get("event") == "preempted"]
    stop = pre["step"]
    ckpt_dir = ckpt / f"step-{stop:08d}"
    manifest = json.loads((ckpt_dir / "MANIFEST.json").read_text())
    size = sum(manifest["files"].values())
    # -- restart: the same command resumes from the checkpoint ------------------------------
    t_restart = time.time()
    proc = start(cmd, env, log)
    try:
        t_resumed_step = wait_for(metrics, proc, steps_after(stop), timeout, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_all(proc)
    (resume,) = [r for r in records(metrics) if r.get("event") == "resume"]
    assert resume["step"] == stop, (resume, stop)
    return {
        "stopped_after_step": stop,
        "checkpoint_bytes": size,
        "cold_start_to_first_step_s": t_first - t_start,
        "sigterm_to_exit_s": t_exit - t_term,
        "sigterm_to_checkpoint_complete_s": pre["time"] - t_term,
        "save_s": pre["save_s"],
        "restart_to_first_resumed_step_s": t_resumed_step - t_restart,
        "restart_to_checkpoint_loaded_s": resume["time"] - t_restart,
    }


def summary(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if k.endswith("_s")]
    return {k: {"median": round(statistics.median(r[k] for r in runs), 3),
                "min": round(min(r[k] for r in runs), 3),
                "max": round(max(r[k] for r in runs), 3)} for k in keys}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="tiny,125m", help="LLM presets (default tiny,125m)")
    ap.add_argument("--runs", type=int, default=3, help="runs per preset (default 3)")
    ap.add_argument("--warm-steps", type=int, default=3,
                    help="steps before the SIGTERM (default 3)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per phase (default 300)")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    args = ap.parse_args()
    if args.runs < 1 or args.warm_steps < 1:
        ap.error("--runs and --warm-steps must be >= 1")
    import torch

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, python "
               f"{platform.python_version()}, torch {torch.__version__}, no GPU"
               if not torch.cuda.is_available() else torch.cuda.get_device_name())
    print(f"# {machine}; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    result = {"date": dt.date.today().isoformat(), "machine": machine, "runs": args.runs,
              "warm_steps": args.warm_steps, "command": command("PRESET", Path("CKPT"),
                                                                  Path("M"))[1:],
              "presets": {}}
    for preset in args.presets.split(","):
        runs = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-interruption-") as tmp:
                env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                       "TRAINYARD_CACHE": str(Path(tmp) / "cache")}
                runs.append(one_run(preset, Path(tmp), env, args.warm_steps, args.timeout))
            print(f"#   {preset} run {i + 1}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in runs[-1].items() if k.endswith("_s")), file=sys.stderr)
        s = summary(runs)
        result["presets"][preset] = {"shape": SHAPES.get(preset, []),
                                     "checkpoint_bytes": runs[-1]["checkpoint_bytes"],
                                     "summary": s, "runs": runs}
        print(f"{preset}: SIGTERM -> exit {s['sigterm_to_exit_s']['median']:.2f}s "
              f"(save {s['save_s']['median']:.2f}s), restart -> first resumed step "
              f"{s['restart_to_first_resumed_step_s']['median']:.2f}s (checkpoint loaded at "
              f"{s['restart_to_checkpoint_loaded_s']['median']:.2f}s); cold start -> first step "
              f"{s['cold_start_to_first_step_s']['median']:.2f}s; checkpoint "
              f"{runs[-1]['checkpoint_bytes'] / 1e6:.1f} MB; median of {args.runs}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
