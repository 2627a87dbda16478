"""A real Hyperband search on CPU (workloads/hpo/local.py): two tiny-LLM trials run one after the
other as `python -m workloads.llm.train` subprocesses; the pruner stops the worse one from the
eval loss it reported at the rung, and the best trial is the one that ran to the end.

Sequential (max_concurrent 1) and seeded, so the sampled learning rates (seed 2: 5.5e-4, then
1.3e-5, which barely trains) and the order trials reach the rung are the same on every run:
pruning is reproducible, not forced. Two trials keep it short (each is a Python process that
imports torch); `python -m workloads.hpo.local --spec examples/hpo/llm-tiny.yaml` is the larger
demonstration."""

from __future__ import annotations

import json

import optuna
import pytest

from workloads.hpo import local
from workloads.hpo.spec import parse

SPEC = {
    "name": "hpo-test", "workload": "llm",
    "flags": {"preset": "tiny", "eval_batches": 2, "log_every": 1000},
    "search": {"lr": {"type": "float", "low": "1e-5", "high": 0.1, "log": True}},
    "objective": {"metric": "eval_loss", "eval_every": 10},
    # max 20 / min 10 < eta 3: one bracket, one rung at step 10; a trial goes past it only
    # if its eval loss there is the best so far.
    "budget": {"max_trials": 2, "max_concurrent": 1, "gpu_hours": 1, "max_steps": 20,
               "min_steps": 10},
    "seed": 2,
}


@pytest.mark.slow
def test_local_search_prunes_bad_trials_on_their_eval_loss(tmp_path):
    lines: list[str] = []
    s = local.search(parse(SPEC), tmp_path, poll_s=0.2, say=lines.append)
    study = s.study
    assert s.stopped is None, lines
    trials = study.trials
    assert len(trials) == 2, lines
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete, "\n".join(lines)

    # Each pruned trial reported a loss at the rung (step 10) worse than an earlier trial's
    # there: the pruner's own rule, on values the trial wrote to its metrics file.
    for t in pruned:
        assert max(t.intermediate_values) == 10, t.intermediate_values
        earlier = [u.intermediate_values[10] for u in trials if u.number < t.number]
        assert t.intermediate_values[10] > min(earlier)
        # ... and those values are the trainer's eval records, not invented here
        metrics = tmp_path / f"trial-{t.number:03d}" / "metrics.jsonl"
        evals = {r["step"]: r["eval_loss"] for r in map(json.loads, metrics.read_text()
                                                           .splitlines())
                 if r.get("event") == "eval"}
        assert evals[10] == t.intermediate_values[10]
        # Whether the subprocess was still running when the pruner spoke (and was killed before
        # step 20) depends on how fast a tiny trial trains on this machine: not asserted here.
        assert t.user_attrs["steps"] <= SPEC["budget"]["max_steps"]

    best = study.best_trial
    assert best.state == optuna.trial.TrialState.COMPLETE
    assert best.user_attrs["steps"] == 20 and max(best.intermediate_values) == 20
    assert best.value < min(t.intermediate_values[10] for t in pruned)
    assert (tmp_path / f"trial-{best.number:03d}" / "ckpt").is_dir()

    out = local.table(study, parse(SPEC), s.gpu_hours())
    assert "pruned" in out and f"best: trial {best.number}" in out

    # Run again in the same workdir: the finished study is resumed, nothing new starts.
    again = local.search(parse(SPEC), tmp_path, poll_s=0.2, say=lines.append)
    assert len(again.study.trials) == 2
