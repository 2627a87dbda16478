"""`trainyard hpo render`: the controller Job, ConfigMap and RBAC validate against the Kubernetes
schema (strict) and pass the repo's pod and RBAC rules; the trial template and the trials the
controller makes from it validate against kubeflow-trainer-api; the budget is checked against
the stack (pool, quota, EFS) and priced at the pool's $/GPU-hour; bad specs are one line per
problem, exit 2."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.services import trainjob
from tests.components.test_k8s_schema import schema_version
from trainyard import hpo
from trainyard.cli import main
from trainyard.synth import load_config
from workloads.hpo import jobs
from workloads.hpo.search import trial_flags
from workloads.hpo.spec import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hpo" / "llm-eval-spot.yaml"


def render(capsys, *argv):
    code = main(["hpo", "render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def variant(tmp_path, **changes) -> Path:
    """The example spec with top-level sections replaced (None deletes)."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def rendered():
    import argparse

    args = argparse.Namespace(spec=EXAMPLE, team="research", outputs=None)
    return hpo.render(args, load_config("prod"))


def test_cli_prints_applyable_objects_budget_and_example_trial(capsys):
    code, out, err = render(capsys, "--stack", "prod", "--spec", str(EXAMPLE), "--team",
                            "research")
    assert code == 0, err
    docs = [d for d in yaml.safe_load_all(out) if d]
    # the service account and its Role come with the stack (trainyard:hpo)
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job"]
    assert all(d["metadata"]["namespace"] == "research" for d in docs)
    # the example trial is a comment: kubectl apply never creates it
    trial = yaml.safe_load("\n".join(line[4:] for line in out.splitlines()
                                     if line.startswith("#   ")))
    assert trial["kind"] == "TrainJob"
    trainjob.validate_train_job(trial)


def test_objects_validate_against_the_kubernetes_schema(rendered):
    version = schema_version(load_config("prod").cluster.kubernetes_version)
    for obj in rendered.objects:
        kubernetes_validate.validate(obj, version, strict=True)


def _judge(objects) -> list[dict]:
    """The objects as a plan's resources, judged by policies/pods.py and rbac.py with prod's
    policy config."""
    from pulumi_policy import Policy

    from policies import POLICIES, pods, rbac
    from trainyard.check import CONFIG_DIR, load_policy_config, run_checks

    mine = [p for m in (pods, rbac) for p in vars(m).values() if isinstance(p, Policy)]
    resources = []
    for o in objects:
        group, _, version = o["apiVersion"].rpartition("/")
        typ = f"kubernetes:{group or 'core'}/{version}:{o['kind']}"
        name = o["metadata"]["name"]
        resources.append({"urn": f"urn:pulumi:prod::trainyard::{typ}::{name}", "type": typ,
                          "name": name, "parent": None, "id": name, "inputs": o,
                          "outputs": {}})
    report = run_checks({"project": "trainyard", "stack": "prod", "resources": resources},
                        load_policy_config(CONFIG_DIR / "prod.json", POLICIES), mine)
    assert report.policies_run == len(mine)
    return report.violations


def _with_stack_rbac(objects):
    from components.services.hpo import rbac

    return [*rbac("research"), *objects]


def test_controller_pod_and_rbac_pass_the_pod_rules(rendered):
    # Only the advisory about the API token: the controller calls the Kubernetes API.
    found = {(v["policy"], v["level"]) for v in _judge(_with_stack_rbac(rendered.objects))}
    assert found == {("pod-service-account-token", "advisory")}, found
    # ... and the rules do look at this Job: break it and they say so
    broken = copy.deepcopy(rendered.objects)
    (c,) = broken[-1]["spec"]["template"]["spec"]["containers"]
    c["securityContext"]["allowPrivilegeEscalation"] = True
    del c["resources"]
    found = {v["policy"] for v in _judge(_with_stack_rbac(broken))}
    assert {"pod-no-root-or-escalation", "pod-resources-set"} <= found


def test_controller_job_runs_the_search_non_root_with_the_spec_and_the_efs_claim(rendered):
    job = rendered.objects[-1]
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:3] == ["python", "-m", "workloads.hpo.run"]
    assert c["image"] == load_config("prod").kubeflow.training_image
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["runAsNonRoot"]
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "shared-efs"}} in \
        pod["volumes"]
    assert pod["serviceAccountName"] == "hpo"
    role = next(o for o in _with_stack_rbac([]) if o["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                              "verbs": ["get", "list", "watch", "create", "delete"]}]


def test_the_prod_plan_gives_every_team_the_controllers_account_and_role(plan_for):
    plan = plan_for("prod")
    mine = [r for r in plan["resources"] if "trainyard:index:Hpo" in r["urn"]
            and r["type"].startswith("kubernetes:")]
    got = {(r["type"].rsplit(":", 1)[-1], r["inputs"]["metadata"]["namespace"]) for r in mine}
    assert got == {(k, t) for k in ("ServiceAccount", "Role", "RoleBinding")
                   for t in ("research", "applied")}
    assert not [r for r in plan_for("dev")["resources"] if "trainyard:index:Hpo" in r["urn"]]


@pytest.mark.parametrize("budget, needle", [
    ({"gpu_hours": 500}, "budget.gpu_hours 500 exceeds the stack's trainyard:hpo.maxGpuHours 200"),
    ({"max_trials": 100}, "budget.max_trials 100 exceeds the stack's trainyard:hpo.maxTrials 64"),
])
def test_a_budget_over_the_stack_ceiling_is_refused(capsys, tmp_path, budget, needle):
    path = variant(tmp_path, budget=budget)
    code, out, err = render(capsys, "--stack", "prod", "--spec", str(path), "--team", "research")
    assert code == 2 and out == ""
    assert needle in err and err.count("\n") == 1, err


def test_a_stack_without_hpo_is_refused(capsys):
    code, out, err = render(capsys, "--stack", "dev", "--spec", str(EXAMPLE))
    assert code == 2 and "stack 'dev' has no trainyard:hpo section" in err


def test_the_controller_makes_valid_trials_from_the_template(rendered):
    spec = load(EXAMPLE)
    cm = next(o for o in rendered.objects if o["kind"] == "ConfigMap")
    assert load(EXAMPLE).raw == yaml.safe_load(cm["data"]["spec.yaml"])
    template = yaml.safe_load(cm["data"]["trial.yaml"])
    trainjob.validate_train_job(template)
    labels = template["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu" and template["spec"]["suspend"] is True
    for number, params in ((7, {"lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 100,
                                "micro_batch_size": 8}),
                           (12, {"lr": 2e-3, "weight_decay": 0.0, "warmup_steps": 500,
                                 "micro_batch_size": 16})):
        ckpt, metrics = jobs.trial_paths(spec.cluster, spec.name, number)
        job = jobs.trial_job(template, spec.name, number, trial_flags(spec, params, ckpt,
                                                                       metrics))
        trainjob.validate_train_job(job)
        assert job["metadata"]["name"] == f"llm-125m-lr-t{number:03d}"
        assert job["metadata"]["labels"][jobs.TRIAL_LABEL] == str(number)
        args = job["spec"]["trainer"]["args"]
        flags = dict(zip(args[::2], args[1::2], strict=True))  # each flag once
        assert len(flags) == len(args) // 2
        assert flags["--lr"] == str(params["lr"]) and flags["--max-steps"] == "2700"
        assert flags["--eval-every"] == "100" and flags["--preset"] == "125m"
        assert flags["--metrics-file"] == f"/shared/hpo/llm-125m-lr/trial-{number:03d}/metrics.jsonl"
        assert flags["--checkpoint-dir"].startswith(f"/shared/hpo/llm-125m-lr/trial-{number:03d}")
        env = {e["name"]: e["value"] for e in job["spec"]["trainer"]["env"]}
        assert env["TRAINYARD_JOB"] == job["metadata"]["name"]
    assert template["metadata"]["name"] == "llm-125m-lr-t000"  # the copy left it alone


def test_budget_is_priced_at_the_pools_gpu_hour(rendered):
    pool = next(p for p in load_config("prod").gpu_pools if p.name == "eval-spot")
    usd, _ = hpo.usd_per_gpu_hour(pool)
    line = next(h for h in rendered.header if h.startswith("budget:"))
    assert f"12 GPU-hours x ${usd:.2f}/GPU-hour" in line
    assert f"at most ${12 * usd:,.2f}" in line
    assert 0 < usd < 10


@pytest.mark.parametrize("changes,message", [
    ({"budget": {"max_concurrent": 20, "max_trials": 24},
      "cluster": {"gpus_per_node": 4}},
     "budget.max_concurrent 20: 20 trials x 4 GPUs = 80 exceeds team 'research''s GPU quota"),
    ({"cluster": {"pool": "nope"}}, "cluster: --pool nope: unknown pool"),
    ({"cluster": None}, "cluster: required to render for the cluster"),
    ({"flags": {"preset": "125m", "learning_rate": 0.1}},
     "flags.learning_rate: not a flag of workload llm"),
    ({"budget": {"gpu_hours": 0}}, "budget.gpu_hours: must be > 0, got 0"),
])
def test_bad_spec_or_budget_is_one_line_exit_2(tmp_path, capsys, changes, message):
    code, out, err = render(capsys, "--stack", "prod", "--spec", str(variant(tmp_path, **changes)),
                            "--team", "research")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_every_spec_problem_is_reported_at_once(tmp_path, capsys):
    spec = variant(tmp_path, budget={"max_steps": 100, "min_steps": 200}, objective={
        "metric": "eval_top1"}, search={"lr": {"type": "float", "low": 1, "high": 0.5}})
    code, _, err = render(capsys, "--stack", "prod", "--spec", str(spec), "--team", "research")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    for key in ("search.lr.high", "objective.metric", "budget.min_steps"):
        assert any(re.search(rf"spec\.yaml: {re.escape(key)}:", line) for line in lines), err


def test_memory_check_uses_the_largest_batch_searched(tmp_path, capsys):
    spec = variant(tmp_path, flags={"preset": "1b"}, search={
        "lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "micro_batch_size": {"type": "categorical", "choices": [1, 64]}})
    code, _, err = render(capsys, "--stack", "prod", "--spec", str(spec), "--team", "research")
    assert code == 2 and "--micro-batch-size 64" in err and "GiB per GPU" in err, err


def test_every_hpo_render_example_in_the_docs_runs_as_written(capsys):
    import shlex

    found = 0
    for path in [REPO / "README.md", REPO / "docs" / "hpo.md"]:
        lines = path.read_text().splitlines()
        for i, raw in enumerate(lines):
            line = raw.strip()
            if not line.startswith("trainyard hpo render"):
                continue
            while line.endswith("\\"):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            words = shlex.split(line, comments=True)
            for stop in (">", "|"):
                if stop in words:
                    words = words[:words.index(stop)]
            code, out, err = render(capsys, *words[3:])
            assert code == 0, f"{path.name}: {line}: {err}"
            found += 1
    assert found >= 1


def test_a_pool_the_stack_keeps_from_searches_is_refused(capsys, tmp_path):
    path = variant(tmp_path, cluster={"pool": "a100", "gpus_per_node": 8})
    code, out, err = render(capsys, "--stack", "prod", "--spec", str(path), "--team", "research")
    assert code == 2 and out == ""
    assert "cluster.pool 'a100' is not one of the pools trainyard:hpo.pools allows " \
        "(eval-spot, g-spot)" in err, err


@pytest.mark.parametrize("section, needle", [
    ({"pools": ["inference"]}, "trainyard:hpo.pools[0]: 'inference' is not a training pool"),
    ({"maxGpuHours": 0}, "trainyard:hpo.maxGpuHours: 0 is below the minimum 1"),
    ({"maxTrial": 3}, "trainyard:hpo.maxTrial"),
])
def test_bad_hpo_section_is_one_line(section, needle):
    from components.config import ConfigError, load

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "stacks" /
                          "Pulumi.prod.yaml").read_text())["config"]
    raw["trainyard:hpo"] = section
    with pytest.raises(ConfigError) as e:
        load(raw, "prod")
    assert len(e.value.problems) == 1 and needle in e.value.problems[0], e.value.problems
