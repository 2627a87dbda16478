"""The search's parts without training: the spec parser (every problem with its key path, flags
checked against the workload's own config), the metrics tail, trial TrainJobs, the controller's
reading of TrainJob status, and the search loop against a scripted runner (pruning on reported
values, the GPU-hour budget, resuming a study)."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from kubernetes.client import ApiException

from workloads.hpo import jobs, run
from workloads.hpo.search import Search, table
from workloads.hpo.spec import SpecError, load, parse
from workloads.hpo.tail import MetricsTail

BASE = {
    "name": "s", "workload": "llm", "flags": {"preset": "tiny"},
    "search": {"lr": {"type": "float", "low": "1e-5", "high": 0.1, "log": True}},
    "objective": {"metric": "eval_loss", "eval_every": 10},
    "budget": {"max_trials": 6, "max_concurrent": 1, "gpu_hours": 100, "max_steps": 90,
               "min_steps": 10},
}


def spec(**changes):
    raw = json.loads(json.dumps(BASE))
    for k, v in changes.items():
        if isinstance(v, dict) and v and isinstance(raw.get(k), dict):
            raw[k].update(v)
        else:
            raw[k] = v
    return parse(raw, "t.yaml")


def problems(**changes) -> list[str]:
    with pytest.raises(SpecError) as e:
        spec(**changes)
    return e.value.lines()


# ----- the spec -----
def test_a_good_spec_parses_with_yaml_1_1_floats_and_the_metrics_direction():
    s = spec()
    assert s.space[0].low == 1e-5 and s.space[0].log and s.objective.direction == "minimize"
    v = spec(workload="vision", flags={"preset": "tiny", "batch-size": 32},
             objective={"metric": "eval_top1"})
    assert v.objective.direction == "maximize" and v.flags == {"preset": "tiny", "batch_size": 32}


@pytest.mark.parametrize("changes,key,message", [
    ({"color": 1}, "color", "unknown key"),
    ({"flags": {"learning_rate": 1}}, "flags.learning_rate", "not a flag of workload llm"),
    ({"flags": {"max_steps": 5}}, "flags.max_steps", "set by the search"),
    ({"flags": {"--checkpoint-dir": "/x"}}, "flags.--checkpoint-dir", "set by the search"),
    ({"flags": {"compile": True}}, "flags.compile", "boolean flags"),
    ({"flags": {"lr": 0.1}}, "search.lr", "also given in flags"),
    ({"flags": {"grad_accum": 0}}, "flags", "--grad-accum: must be > 0"),
    ({"search": {"micro_batch_size": {"type": "categorical", "choices": [0, 8]}}},
     "search.micro_batch_size", "--micro-batch-size: must be > 0"),
    ({"search": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
     "search.lr.low", "must be > 0 on a log scale"),
    ({"search": {"lr": {"type": "gaussian"}}}, "search.lr.type", "float, int or categorical"),
    ({"search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "step": 2}}},
     "search.lr.step", "unknown key"),
    ({"search": {}}, "search", "names no flag"),
    ({"objective": {"metric": "eval_top1"}}, "objective.metric", "eval_loss, eval_perplexity"),
    ({"objective": {"eval_every": 3}}, "objective.eval_every", "does not divide"),
    ({"budget": {"gpu_hours": -1}}, "budget.gpu_hours", "must be > 0"),
    ({"budget": {"max_concurrent": 9}}, "budget.max_concurrent", "more than max_trials"),
    ({"budget": {"reduction_factor": 1}}, "budget.reduction_factor", "must be >= 2"),
    ({"name": "Has_Caps"}, "name", "DNS label"),
    ({"workload": "rl"}, "workload", "llm, vision"),
    ({"flags": {"preset": "huge"}}, "flags", "unknown preset 'huge'"),
    ({"flags": {"eval_batches": 0}}, "flags.eval_batches", "turns evaluation off"),
    ({"cluster": {"dir": "/tmp/x", "pool": "a"}}, "cluster.dir", "must be under /shared"),
])
def test_each_bad_key_is_one_line_naming_it(changes, key, message):
    lines = problems(**changes)
    assert any(line.startswith(f"t.yaml: {key}: ") and message in line for line in lines), lines


def test_every_problem_is_collected():
    lines = problems(flags={"nope": 1}, objective={"metric": "x"}, budget={"max_steps": 0})
    assert len(lines) >= 3 and all("\n" not in line for line in lines)


def test_load_names_the_file_and_the_yaml_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch: [\n")
    with pytest.raises(SpecError) as e:
        load(bad)
    assert e.value.lines()[0].startswith(f"{bad}: .: not YAML (line")
    with pytest.raises(SpecError, match="cannot read"):
        load(tmp_path / "missing.yaml")


# ----- the metrics tail -----
def test_tail_reads_complete_lines_and_starts_over_when_the_file_is_truncated(tmp_path):
    path = tmp_path / "m.jsonl"
    t = MetricsTail(path, "eval_loss")
    assert t.poll() == []  # no file yet
    path.write_text('{"step": 10, "loss": 4}\n{"event": "eval", "step": 10, "eval_loss": 3.5}\n'
                    '{"event": "eval", "step": 20, "eval_l')  # torn last line
    assert t.poll() == [(10, 3.5)] and t.last_step == 10
    with path.open("a") as f:
        f.write('oss": 3.0}\n{"event": "done", "step": 20}\n')
    assert t.poll() == [(20, 3.0)] and t.done and t.last == (20, 3.0)
    path.write_text('{"event": "eval", "step": 10, "eval_loss": 3.5}\n')  # a resume truncated it
    assert t.poll() == []  # step 10 was already read
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"event": "eval", "step": 10, "eval_loss": NaN}\n')
    assert math.isnan(MetricsTail(nan, "eval_loss").poll()[0][1])


# ----- trial TrainJobs and their status -----
TEMPLATE = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "s-t000", "namespace": "research", "labels": {"a": "b"}},
            "spec": {"suspend": True, "trainer": {"numNodes": 2, "numProcPerNode": 4,
                                 "args": ["--preset", "tiny", "--metrics-file", "/shared/x"],
                                 "env": [{"name": "TRAINYARD_JOB", "value": "s-t000"}]}}}


def test_trial_job_renames_labels_and_sets_only_the_trials_flags():
    job = jobs.trial_job(TEMPLATE, "s", 12, {"lr": 0.5, "metrics_file": "/shared/m"})
    assert job["metadata"]["name"] == "s-t012"
    assert job["metadata"]["labels"] == {"a": "b", jobs.STUDY_LABEL: "s", jobs.TRIAL_LABEL: "12"}
    assert job["spec"]["trainer"]["args"] == ["--preset", "tiny", "--metrics-file", "/shared/m",
                                              "--lr", "0.5"]
    assert job["spec"]["trainer"]["env"] == [{"name": "TRAINYARD_JOB", "value": "s-t012"}]
    assert TEMPLATE["metadata"]["name"] == "s-t000"


def test_trainjob_status_and_admission_time():
    queued = {"spec": {"suspend": True}, "status": {"conditions": [
        {"type": "Suspended", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    admitted = {"spec": {"suspend": False}, "status": {"conditions": [
        {"type": "Suspended", "status": "False", "lastTransitionTime": "2026-01-01T01:00:00Z"}]}}
    done = {**admitted, "status": {"conditions": [*admitted["status"]["conditions"],
                                                  {"type": "Complete", "status": "True"}]}}
    failed = {"spec": {}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert run.job_status(queued) is None and run.admitted_at(queued) is None
    assert run.admitted_at(admitted) == 1767229200.0 and run.job_status(admitted) is None
    assert run.job_status(done) == "complete"
    assert run.job_status(failed).startswith("failed: BackoffLimitExceeded")
    assert run.job_status(None) == "failed: its TrainJob was deleted"


class FakeApi:
    """CustomObjectsApi's three calls, on a dict."""

    def __init__(self):
        self.objects, self.deleted = {}, []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiException(status=409)
        self.objects[name] = body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if name not in self.objects:
            raise ApiException(status=404)
        return self.objects[name]

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name,
                                        propagation_policy=None):
        if self.objects.pop(name, None) is None:
            raise ApiException(status=404)
        self.deleted.append(name)


def test_cluster_trials_create_watch_and_delete_trainjobs(tmp_path):
    s = spec(cluster={"pool": "a100", "dir": "/shared/hpo"})
    api = FakeApi()
    trials = run.ClusterTrials(s, TEMPLATE, "research", api, clock=lambda: 100.0)
    assert trials.gpus_per_trial == 8
    ckpt, metrics = trials.paths(3)
    assert (ckpt, metrics) == ("/shared/hpo/s/trial-003/ckpt", "/shared/hpo/s/trial-003/"
                                                               "metrics.jsonl")

    class R:
        number, flags, handle = 3, {"lr": 0.1, "metrics_file": str(tmp_path / "t3" / "m")}, None
    r = R()
    trials.launch(r)
    assert r.handle == "s-t003" and (tmp_path / "t3").is_dir()
    trials.launch(r)  # a restarted controller creating it again: 409 is fine
    assert trials.status(r) is None and trials.running_since(r) is None  # suspended: queued
    api.objects["s-t003"]["spec"]["suspend"] = False
    trials.status(r)
    assert trials.running_since(r) == 100.0  # unsuspended, no condition yet: first seen
    assert trials.reattach(r)
    trials.stop(r, "pruned")
    trials.stop(r, "pruned")  # already gone: fine
    assert api.deleted == ["s-t003"] and trials.status(r).startswith("failed")
    assert not trials.reattach(r)


# ----- the loop, against a scripted runner -----
class Scripted:
    """Each `status` call advances a trial by one evaluation (eval_every steps) and the clock by
    `tick` seconds; a trial's eval loss depends on how far its lr is from 3e-3."""

    gpus_per_trial = 2

    def __init__(self, tmp_path, s, tick=1.0, keep=True):
        self.tmp, self.spec, self.tick, self.keep = tmp_path, s, tick, keep
        self.now, self.started, self.steps, self.stopped = 0.0, {}, {}, []

    def clock(self):
        return self.now

    def paths(self, n):
        return str(self.tmp / f"t{n}" / "ckpt"), str(self.tmp / f"t{n}.jsonl")

    def launch(self, r):
        self.started[r.number], self.steps[r.number] = self.now, 0

    def loss(self, lr, step):
        return abs(math.log10(lr) - math.log10(3e-3)) + 3.0 - step / 1000

    def status(self, r):
        if r.number in self.stopped:
            return "failed: stopped"
        self.now += self.tick
        b = self.spec.budget
        step = self.steps[r.number] = self.steps[r.number] + self.spec.objective.eval_every
        with open(r.flags["metrics_file"], "a") as f:
            f.write(json.dumps({"step": step, "loss": 1.0}) + "\n")
            f.write(json.dumps({"event": "eval", "step": step,
                                "eval_loss": self.loss(r.params["lr"], step)}) + "\n")
        return "complete" if step >= b.max_steps else None

    def running_since(self, r):
        return self.started.get(r.number)

    def stop(self, r, why):
        self.stopped.append(r.number)

    def reattach(self, r):
        if self.keep:
            self.started.setdefault(r.number, self.now)
            self.steps.setdefault(r.number, max(r.reported, default=0))
        return self.keep


def search(tmp_path, s, runner, memory=False):
    """The loop on `runner`; the study in SQLite (what a restart resumes) or in memory."""
    storage = None if memory else f"sqlite:///{tmp_path / 'study.db'}"
    return Search(s, runner, storage, say=lambda _: None, poll_s=0, clock=runner.clock)


def test_pruner_stops_trials_worse_at_a_rung_and_never_at_max_steps(tmp_path):
    s = spec(budget={"max_trials": 8, "max_concurrent": 2})
    runner = Scripted(tmp_path, s)
    study = search(tmp_path, s, runner, memory=True).run()
    states = [t.state for t in study.trials]
    assert len(states) == 8 and optuna.trial.TrialState.PRUNED in states
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert max(t.intermediate_values) < s.budget.max_steps and t.number in runner.stopped
    best = study.best_trial
    assert best.state == optuna.trial.TrialState.COMPLETE and best.user_attrs["steps"] == 90
    assert "pruned" in table(study, s)


def test_search_stops_everything_when_the_gpu_hours_are_spent(tmp_path):
    # 2 GPUs per trial, 2 at a time, 10 min per poll: 4 GPUs x 10 min = 2/3 GPU-hour per poll
    s = spec(budget={"gpu_hours": 1, "max_concurrent": 2})
    runner = Scripted(tmp_path, s, tick=300)
    srch = search(tmp_path, s, runner, memory=True)
    study = srch.run()
    assert srch.stopped.startswith("GPU-hour budget spent")
    assert all(t.state.is_finished() for t in study.trials) and len(study.trials) == 2
    assert sorted(runner.stopped) == [0, 1]
    assert all(t.user_attrs["ended"] == "stopped: budget spent" for t in study.trials)
    assert 1.0 <= srch.gpu_hours() < 1.5


def test_a_restarted_controller_resumes_running_trials_or_fails_lost_ones(tmp_path):
    s = spec(budget={"max_trials": 2, "max_steps": 20})
    first = search(tmp_path, s, Scripted(tmp_path, s))
    first._start()  # ... and the controller dies with trial 0 running
    run0 = first.active[0]
    first._watch(run0)  # one evaluation (step 10) reported
    assert first.study.trials[0].state == optuna.trial.TrialState.RUNNING
    again = search(tmp_path, s, Scripted(tmp_path, s))
    study = again.run()
    t0 = study.trials[0]
    assert t0.state.is_finished() and t0.params == run0.params
    assert sorted(t0.intermediate_values)[0] == 10  # reported once, not twice
    with pytest.raises(ValueError, match="another spec"):
        search(tmp_path, spec(search={"lr": {"type": "float", "low": 0.1, "high": 1}}),
               Scripted(tmp_path, s))
    lost_dir = tmp_path / "lost"
    lost_dir.mkdir()
    gone = search(lost_dir, s, Scripted(lost_dir, s))
    gone._start()
    lost = search(lost_dir, s, Scripted(lost_dir, s, keep=False)).run()
    assert lost.trials[0].user_attrs["ended"].startswith("stopped: its runner is gone")


# ----- the entry points: bad input is one line per problem, exit 2 -----
def test_entry_points_refuse_bad_specs_and_templates(tmp_path, capsys):
    from workloads.hpo import local

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**BASE, "flags": {"learning_rate": 1}, "seed": -1}))
    assert local.main(["--spec", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"error: {bad}: ") for line in err)
    assert any("flags.learning_rate" in line for line in err)
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps(BASE))  # no cluster section
    assert run.main(["--spec", str(good), "--template", "t.yaml", "--namespace", "x"]) == 2
    assert "cluster: required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        local.main(["--spec"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_trials_that_cannot_start_fail_and_stop_the_search(tmp_path):
    class Refused(Scripted):
        def launch(self, r):
            raise ApiException(status=403, reason="Forbidden")

    s = spec()
    srch = search(tmp_path, s, Refused(tmp_path, s), memory=True)
    study = srch.run()
    assert len(study.trials) == 3 and srch.stopped == "3 trials failed in a row"
    assert all(t.user_attrs["ended"].startswith("failed to start: (403)") for t in study.trials)
