"""The search: an Optuna study (TPE sampler, seeded; HyperbandPruner) and the loop that starts
trials, feeds each evaluation a trial writes to its metrics file to the pruner, stops the trials
the pruner prunes, and stops everything when the GPU-hour budget is spent.

Hyperband (Li et al., JMLR 18, 2018) over training steps: ``budget.min_steps`` is the first rung,
``budget.max_steps`` every trial's length, ``budget.reduction_factor`` (eta) the fraction 1/eta
a rung keeps. Optuna's HyperbandPruner runs several successive-halving brackets side by side,
each trial assigned to one by a hash of the study name and trial number; at a rung a trial goes
on only if its value is among the best 1/eta of the values its bracket's trials had there (the
first to arrive always goes on). A trial that reached max_steps is complete, never pruned.

The runner (``local.LocalTrials`` or ``run.ClusterTrials``) starts, watches and stops trials; the
study lives in SQLite (``storage``) so a restarted controller resumes it: its running trials are
re-attached when the runner still has them, failed when it does not.

    python -m workloads.hpo.local --spec examples/hpo/llm-tiny.yaml     # drives this loop
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from workloads.hpo.spec import Spec, flag
from workloads.hpo.tail import MetricsTail

MAX_FAILURES = 3
"""Consecutive failed trials that stop the search (a broken flag or image fails them all)."""


@dataclass
class TrialRun:
    """One running trial, as the loop tracks it."""

    number: int
    trial: Any
    """optuna.Trial (ask-and-tell)."""
    params: dict[str, Any]
    flags: dict[str, Any]
    """Every flag the trial runs with (base, searched, and the search's own)."""
    tail: MetricsTail
    reported: set[int] = field(default_factory=set)
    handle: Any = None
    """What the runner keeps: a Popen, a TrainJob name."""


class Trials(Protocol):
    """What the loop needs from a runner."""

    gpus_per_trial: int

    def paths(self, number: int) -> tuple[str, str]:
        """(checkpoint dir, metrics file) of trial `number`."""

    def launch(self, run: TrialRun) -> None:
        """Start the trial (sets run.handle)."""

    def status(self, run: TrialRun) -> Optional[str]:
        """None while running; "complete"; or "failed: <why>"."""

    def running_since(self, run: TrialRun) -> Optional[float]:
        """Epoch seconds since which the trial holds its GPUs (None: not admitted yet)."""

    def stop(self, run: TrialRun, why: str) -> None:
        """Stop the trial now (pruned, or out of budget)."""

    def reattach(self, run: TrialRun) -> bool:
        """A trial a previous controller started: can this runner still watch it?"""


def spec_digest(spec: Spec) -> str:
    """What a study was made from: resuming it with another spec is refused."""
    keep = {k: spec.raw.get(k) for k in ("workload", "flags", "search", "objective")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trial_flags(spec: Spec, params: dict[str, Any], checkpoint_dir: str,
                metrics_file: str) -> dict[str, Any]:
    """Field -> value for one trial: the base flags, the sampled ones, then the search's own."""
    return {**spec.flags, **params, "max_steps": spec.budget.max_steps,
            "eval_every": spec.objective.eval_every, "checkpoint_dir": checkpoint_dir,
            "metrics_file": metrics_file}


def argv(flags: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in flags.items():
        out += [flag(name), str(value)]
    return out


def make_study(spec: Spec, storage: Optional[str]):
    """Create or load the study `spec.name` in `storage` (an SQLAlchemy URL; None: in memory)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    b = spec.budget
    study = optuna.create_study(
        study_name=spec.name, storage=storage, load_if_exists=True,
        direction=spec.objective.direction,
        sampler=optuna.samplers.TPESampler(seed=spec.seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=b.min_steps,
                                              max_resource=b.max_steps,
                                              reduction_factor=b.reduction_factor))
    digest = spec_digest(spec)
    made_from = study.user_attrs.get("spec_digest")
    if made_from is None:
        study.set_user_attr("spec_digest", digest)
        study.set_user_attr("metric", spec.objective.metric)
    elif made_from != digest:
        raise ValueError(f"study {spec.name!r} in {storage} was made from another spec (its "
                         "workload, flags, search space or objective changed): give the spec a "
                         "new name, or start over (--fresh locally)")
    return study


def suggest(trial, spec: Spec) -> dict[str, Any]:
    out = {}
    for p in spec.space:
        if p.kind == "float":
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif p.kind == "int":
            out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step or 1,
                                            log=p.log)
        else:
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return out


class Search:
    """The loop. `say` prints progress lines; `clock` is wall time (epoch seconds)."""

    def __init__(self, spec: Spec, trials: Trials, storage: Optional[str],
                 say: Callable[[str], None] = print, poll_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec, self.trials, self.say, self.poll_s, self.clock = \
            spec, trials, say, poll_s, clock
        self.study = make_study(spec, storage)
        self.active: list[TrialRun] = []
        self.failures = 0
        self.stopped: Optional[str] = None
        """Why the search ended early (budget, failures), or None."""

    # ----- GPU-hours -----
    def gpu_hours(self) -> float:
        """Spent: finished trials' recorded GPU-seconds plus the running ones' so far."""
        done = sum(t.user_attrs.get("gpu_seconds", 0.0)
                   for t in self.study.get_trials(deepcopy=False) if t.state.is_finished())
        return (done + sum(self._gpu_seconds(r) for r in self.active)) / 3600

    def _gpu_seconds(self, run: TrialRun) -> float:
        since = self.trials.running_since(run)
        return 0.0 if since is None else max(0.0, self.clock() - since) * \
            self.trials.gpus_per_trial

    # ----- the loop -----
    def run(self) -> Any:
        self._resume()
        b = self.spec.budget
        while True:
            if self.gpu_hours() >= b.gpu_hours:
                self.stopped = f"GPU-hour budget spent ({self.gpu_hours():.4f} of {b.gpu_hours:g})"
                for run in list(self.active):
                    self._stop(run, "stopped: budget spent")
                break
            if self.failures >= MAX_FAILURES:
                self.stopped = f"{self.failures} trials failed in a row"
                for run in list(self.active):
                    self._stop(run, "stopped: the search failed")
                break
            while len(self.active) < b.max_concurrent and self.failures < MAX_FAILURES \
                    and len(self.study.trials) < b.max_trials:
                self._start()
            if self.failures >= MAX_FAILURES:
                continue  # stopped at the top of the loop
            if not self.active:
                break
            time.sleep(self.poll_s)
            for run in list(self.active):
                self._watch(run)
        if self.stopped:
            self.say(f"search stopped: {self.stopped}")
        return self.study

    def _start(self) -> None:
        trial = self.study.ask()
        params = suggest(trial, self.spec)
        ckpt, metrics = self.trials.paths(trial.number)
        run = TrialRun(trial.number, trial, params, trial_flags(self.spec, params, ckpt, metrics),
                       MetricsTail(metrics, self.spec.objective.metric))
        trial.set_user_attr("checkpoint_dir", ckpt)
        self.active.append(run)
        try:
            self.trials.launch(run)
        except Exception as e:  # refused by the API server, no such program: a failed trial
            self._finish(run, "failed", f"failed to start: {str(e).splitlines()[0]}")
            return
        self.say(f"trial {run.number} started: {describe(params)}")

    def _watch(self, run: TrialRun) -> None:
        status = self.trials.status(run)  # first: evaluations written before it ended count
        for step, value in run.tail.poll():
            if step in run.reported:
                continue
            run.trial.report(value, step)
            run.reported.add(step)
            # A trial at max_steps has had all its budget: complete, not pruned at the last rung.
            if step < self.spec.budget.max_steps and run.trial.should_prune():
                self.trials.stop(run, "pruned")
                self._finish(run, "pruned", f"pruned at step {step} "
                                            f"({self.spec.objective.metric} {value:.4g})")
                return
        if status == "complete":
            last = run.tail.last
            if last is None:
                self._finish(run, "failed", "failed: it wrote no eval record")
            else:
                self._finish(run, "complete", f"complete at step {run.tail.last_step} "
                                              f"({self.spec.objective.metric} {last[1]:.4g})")
        elif status is not None:
            self._finish(run, "failed", status)

    def _stop(self, run: TrialRun, why: str) -> None:
        self.trials.stop(run, why)
        self._finish(run, "stopped", why)

    def _finish(self, run: TrialRun, state: str, line: str) -> None:
        import optuna

        t = run.trial
        t.set_user_attr("gpu_seconds", self._gpu_seconds(run))
        t.set_user_attr("steps", run.tail.last_step)
        t.set_user_attr("ended", line)
        if state == "complete":
            value = run.tail.last[1]
            if math.isfinite(value):
                self.study.tell(t, value)
                self.failures = 0
            else:
                self.study.tell(t, state=optuna.trial.TrialState.FAIL)
                line = f"failed: its last {self.spec.objective.metric} is {value}"
                t.set_user_attr("ended", line)
        elif state == "pruned":
            self.study.tell(t, state=optuna.trial.TrialState.PRUNED)
            self.failures = 0
        else:
            self.study.tell(t, state=optuna.trial.TrialState.FAIL)
            if state == "failed":
                self.failures += 1
        self.active.remove(run)
        self.say(f"trial {run.number} {line}")

    def _resume(self) -> None:
        """Trials a previous controller left running: watch them again, or fail them."""
        import optuna

        for frozen in self.study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # Optuna's own handle
            ckpt, metrics = self.trials.paths(frozen.number)
            run = TrialRun(frozen.number, trial, dict(frozen.params),
                           trial_flags(self.spec, dict(frozen.params), ckpt, metrics),
                           MetricsTail(metrics, self.spec.objective.metric),
                           reported=set(frozen.intermediate_values))
            self.active.append(run)
            if self.trials.reattach(run):
                self.say(f"trial {run.number} resumed: {describe(run.params)}")
            else:
                self._finish(run, "stopped", "stopped: its runner is gone (controller "
                                             "restarted)")


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(study, spec: Spec, gpu_hours: Optional[float] = None) -> str:
    """Trial, state, steps run, last objective value, parameters; then the best trial."""
    import optuna

    names = [p.name for p in spec.space]
    metric = spec.objective.metric
    head = ["trial", "state", "steps", metric, *names]
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.intermediate_values
        last = values[max(values)] if values else None
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running"}.get(
            t.state.name, "stopped" if str(t.user_attrs.get("ended", "")).startswith(
                "stopped") else "failed")
        rows.append([str(t.number), state, str(t.user_attrs.get("steps", "")),
                     "" if last is None else f"{last:.4f}",
                     *(_fmt(t.params[n]) if n in t.params else "" for n in names)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(c.rjust(w) if i in (0, 2, 3) else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in [head, *rows]]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    lines.append(f"{len(study.trials)} trials: {len(complete)} complete, {pruned} pruned")
    if complete:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, {metric} {best.value:.4f} "
                     f"({describe(best.params)}); checkpoint "
                     f"{best.user_attrs.get('checkpoint_dir', '?')}")
    if gpu_hours is not None:
        lines.append(f"GPU-hours spent: {gpu_hours:.4f} of {spec.budget.gpu_hours:g}")
    return "\n".join(lines)
