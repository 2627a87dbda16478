"""Run a search on this machine: every trial is a real ``python -m workloads.<workload>.train``
subprocess on CPU with its own checkpoint directory and metrics file; the search tails the
metrics file, reports each evaluation to Optuna's HyperbandPruner, and kills the subprocess the
moment the pruner prunes it. What you see here is what the cluster controller
(``workloads.hpo.run``) does with TrainJobs, before any GPU-hour is spent.

    python -m workloads.hpo.local --spec examples/hpo/llm-tiny.yaml
    python -m workloads.hpo.local --spec examples/hpo/llm-tiny.yaml --workdir out/hpo/x --fresh

Layout of ``--workdir`` (default out/hpo/<name>): ``study.db`` (the Optuna study: run it again
to resume it), ``trial-NNN/{ckpt/,metrics.jsonl,train.log}``, and for the LLM without
``flags.data``, ``data/``: a small slice of the built-in corpus with a held-out split, prepared
once, so every trial evaluates on the same tokens. Locally a trial counts as one device for the
GPU-hour budget. Exit codes: 0 done, 2 bad spec or flags (one line per problem), 1 the search
stopped because trials kept failing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from workloads.common.cli import ArgumentParser
from workloads.hpo.search import Search, TrialRun, argv, table
from workloads.hpo.spec import Spec, SpecError, load

REPO = Path(__file__).resolve().parents[2]
LOCAL_CORPUS_TOKENS = 400_000
"""Tokens of the built-in corpus a local LLM search trains on (prepared in a second)."""
LOCAL_VAL_FRACTION = 0.02


class LocalTrials:
    """Trials as subprocesses; ``threads`` CPU threads each (OMP_NUM_THREADS)."""

    gpus_per_trial = 1  # a local trial counts as one device against the GPU-hour budget

    def __init__(self, spec: Spec, workdir: Path, threads: int = 1,
                 extra_flags: Optional[dict] = None) -> None:
        self.spec, self.workdir, self.threads = spec, workdir, threads
        self.extra_flags = extra_flags or {}
        self.started: dict[int, float] = {}

    def trial_dir(self, number: int) -> Path:
        return self.workdir / f"trial-{number:03d}"

    def paths(self, number: int) -> tuple[str, str]:
        d = self.trial_dir(number)
        return str(d / "ckpt"), str(d / "metrics.jsonl")

    def launch(self, run: TrialRun) -> None:
        d = self.trial_dir(run.number)
        d.mkdir(parents=True, exist_ok=True)
        flags = {**self.extra_flags, **run.flags, "device": "cpu"}
        cmd = [sys.executable, "-m", f"workloads.{self.spec.workload}.train", *argv(flags)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        log = (d / "train.log").open("w")
        run.handle = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.started[run.number] = time.time()

    def status(self, run: TrialRun) -> Optional[str]:
        code = run.handle.poll()
        if code is None:
            return None
        if code == 0:
            return "complete"
        lines = (self.trial_dir(run.number) / "train.log").read_text(
            errors="replace").strip().splitlines()
        return f"failed: exit {code}: {lines[-1] if lines else 'no output'}"

    def running_since(self, run: TrialRun) -> Optional[float]:
        return self.started.get(run.number)

    def stop(self, run: TrialRun, why: str) -> None:
        """SIGKILL: a pruned trial is thrown away, so there is no checkpoint to save."""
        proc = run.handle
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def reattach(self, run: TrialRun) -> bool:
        return False  # the processes of a previous run died with it


def prepare_llm_data(workdir: Path, say=print) -> Path:
    """A small slice of the built-in corpus with a held-out split, built once per workdir."""
    from workloads.llm.prepare import build_default

    out = workdir / "data"
    if not (out / "manifest.json").is_file():
        build_default(out, max_tokens=LOCAL_CORPUS_TOKENS, val_fraction=LOCAL_VAL_FRACTION)
        say(f"data: {LOCAL_CORPUS_TOKENS:,} tokens of the built-in corpus in {out} "
            f"({LOCAL_VAL_FRACTION:.0%} held out)")
    return out


def search(spec: Spec, workdir: Path, fresh: bool = False, threads: Optional[int] = None,
           poll_s: float = 0.5, say=print) -> Search:
    """Run the search in `workdir` and return it (``.study``, ``.stopped``)."""
    if fresh:
        for p in workdir.glob("trial-*"):
            shutil.rmtree(p)
        (workdir / "study.db").unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    extra = {}
    if spec.workload == "llm" and "data" not in spec.flags:
        extra["data"] = str(prepare_llm_data(workdir, say))
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // spec.budget.max_concurrent)
    trials = LocalTrials(spec, workdir, threads, extra)
    s = Search(spec, trials, f"sqlite:///{(workdir / 'study.db').resolve()}", say=say,
               poll_s=poll_s)
    s.run()
    return s


def main(args: Optional[list[str]] = None) -> int:
    p = ArgumentParser(prog="python -m workloads.hpo.local",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="the search spec (YAML)")
    p.add_argument("--workdir", type=Path, help="default out/hpo/<name>")
    p.add_argument("--fresh", action="store_true",
                   help="delete the workdir's study and trials first (default: resume them)")
    p.add_argument("--threads", type=int, help="CPU threads per trial (default: cores / "
                                                "budget.max_concurrent)")
    a = p.parse_args(args)
    try:
        spec = load(a.spec)
    except SpecError as e:
        for line in e.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    workdir = a.workdir or REPO / "out" / "hpo" / spec.name
    t0 = time.time()
    try:
        s = search(spec, workdir, a.fresh, a.threads)
    except ValueError as e:  # a study made from another spec
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(s.study, spec, s.gpu_hours()))
    print(f"wall time: {time.time() - t0:.0f} s")
    return 1 if s.stopped and "failed" in s.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
