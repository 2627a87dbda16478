"""`trainyard job render`: TrainJobs from workload config + pool facts + the deployed stack's
outputs (`pulumi stack output --json`), validated against kubeflow-trainer-api; a job that would
point at a placeholder of the offline plan is refused; bad input is one line naming the value,
exit 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from trainyard import jobspec
from trainyard.cli import main

# What S3 names a bucket created from a bucketPrefix: the prefix and 26 digits.
DEPLOYED_BUCKET = "trainyard-prod-checkpoints-20261127093015123400000001"


def deployed_outputs(stack: str, **overrides) -> dict:
    """The outputs `pulumi stack output --json` prints for `stack` once deployed (the keys job
    render reads; real-looking values, no placeholders)."""
    from trainyard.synth import load_config

    cfg = load_config(stack)
    out = {"checkpointsBucket": DEPLOYED_BUCKET.replace("prod", stack),
           "checkpointPrefix": "checkpoints/", "trainingServiceAccount": "trainer",
           "trainingRuntimes": {p.name: jobspec.runtime_name(jobspec.pool_facts(p))
                                for p in cfg.gpu_pools if p.purpose == "training"},
           "clusterName": f"trainyard-{stack}", "grafanaAdminPassword": "[secret]",
           "storageKeyArn": "arn:aws:kms:us-east-1:210987654321:key/0b5c6a1e-4d2f-4a8e-9c1b"}
    if cfg.storage.efs.enabled:
        out["sharedClaimName"] = "shared-efs"
    if cfg.storage.fsx.enabled:
        out["fsxClaimName"] = "fsx-lustre"
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def write_outputs(path, stack: str = "prod", **overrides):
    path.write_text(json.dumps(deployed_outputs(stack, **overrides), indent=2))
    return path


@pytest.fixture()
def prod_outputs(tmp_path):
    return write_outputs(tmp_path / "outputs.json")


def render(capsys, *argv):
    code = main(["job", "render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def trainer(job):
    return job["spec"]["trainer"]


def node_patch(job):
    (patch,) = job["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"
    return rjob["template"]["spec"]["template"]["spec"]


# ----------------------------------------------------------------------------------------------
# A p4d pool (EFA)
# ----------------------------------------------------------------------------------------------
def test_p4d_job_requests_8_gpus_4_efa_and_huge_pages_and_mounts_the_checkpoints(capsys,
                                                                                  prod_outputs):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "2",
                            "--team", "research", "--outputs", str(prod_outputs))
    assert code == 0, err
    job = yaml.safe_load(out)
    jobspec.validate_train_job(job)
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"] == {"name": "llm-a100-2n", "namespace": "research", "labels": {
        "trainyard.io/workload": "llm", "trainyard.io/pool": "a100", "trainyard.io/stack": "prod",
        "kueue.x-k8s.io/queue-name": "gpu", "kueue.x-k8s.io/priority-class": "training"}}
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime",
                                         "name": "torch-efa-a100"}
    t = trainer(job)
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 8
    per_node = {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "4", "hugepages-2Mi": "5120Mi"}
    mem = t["resourcesPerNode"]["requests"]["memory"]
    assert t["resourcesPerNode"]["limits"] == {**per_node, "memory": mem}
    assert {k: t["resourcesPerNode"]["requests"][k] for k in per_node} == per_node
    assert t["command"] == ["python", "-m", "workloads.common.launch", "--nproc-per-node", "8",
                            "-m", "workloads.llm.train"]
    args = dict(zip(t["args"][::2], t["args"][1::2], strict=True))
    checkpoint = f"s3://{DEPLOYED_BUCKET}/checkpoints/research/llm-a100-2n/"
    assert args["--checkpoint-dir"] == checkpoint
    assert args["--metrics-file"] == jobspec.metrics_file_path()
    assert {"--preset", "--max-steps", "--checkpoint-every", "--seed"} <= set(args)
    assert t["image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainyard-train:0.1.0"  # kubeflow.trainingImage
    # The team's shared claims (EFS at /shared, FSx at /fsx in prod) on every node.
    spec = node_patch(job)
    assert {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]} == \
        {"shared-efs", "fsx-lustre"}
    (container,) = spec["containers"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/shared", "/fsx"}


def test_p4d_job_states_the_deployed_service_account(capsys, tmp_path):
    path = write_outputs(tmp_path / "o.json", trainingServiceAccount="trainer-v2")
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "1",
                            "--team", "research", "--outputs", str(path))
    assert code == 0, err
    assert node_patch(yaml.safe_load(out))["serviceAccountName"] == "trainer-v2"


def test_outputs_from_stdin_give_the_checkpoint_location(capsys, monkeypatch):
    outputs = deployed_outputs("prod", checkpointPrefix="ckpt/")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(outputs)))
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "h100", "--nodes", "4",
                            "--team", "research", "--name", "run-7", "--outputs", "-")
    assert code == 0, err
    args = trainer(yaml.safe_load(out))["args"]
    assert args[args.index("--checkpoint-dir") + 1] == \
        f"s3://{DEPLOYED_BUCKET}/ckpt/research/run-7/"
    assert trainer(yaml.safe_load(out))["resourcesPerNode"]["limits"][
        "vpc.amazonaws.com/efa"] == "32"


HINT = ("run `pulumi stack output --json > outputs.json` and pass --outputs outputs.json, or "
        "give --checkpoint-dir")


def test_without_outputs_the_job_is_refused_before_anything_is_synthesized(capsys, monkeypatch):
    import trainyard.synth

    def no_synthesis(*a, **k):
        raise AssertionError("job render must not synthesize: the plan's bucket is a placeholder")

    monkeypatch.setattr(trainyard.synth, "synthesize", no_synthesis)
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "2",
                            "--team", "research")
    assert code == 2 and out == ""
    assert err == ("error: --checkpoint-dir defaults to the deployed stack's checkpoints "
                   f"bucket, which the offline plan only has a placeholder for; {HINT}\n")


def test_the_offline_plans_outputs_are_recognised_as_placeholders(capsys, tmp_path, plan_for):
    """Every mock-made bucket name is refused: prod names its buckets from a bucketPrefix, dev
    and staging may let Pulumi auto-name them; both come out of trainyard/mocks.py."""
    for stack, pool in (("prod", "a100"), ("dev", "dev-spot")):
        mock = plan_for(stack)["outputs"]
        path = tmp_path / f"{stack}.json"
        path.write_text(json.dumps(mock))  # as if `pulumi stack output` printed the mock plan
        code, out, err = render(capsys, "llm", "--stack", stack, "--pool", pool, "--nodes", "1",
                                "--team", "research", "--outputs", str(path))
        assert code == 2 and out == "", stack
        assert err.startswith(f"error: --outputs {path}: checkpointsBucket "
                              f"'{mock['checkpointsBucket']}' is a placeholder from the offline "
                              "plan ("), err
        assert err.endswith(f"; {HINT}\n") and err.count("\n") == 1


def test_a_plan_file_is_not_stack_outputs(capsys, tmp_path, plan_for):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_for("dev")))
    code, out, err = render(capsys, "llm", "--stack", "dev", "--pool", "dev-spot", "--nodes",
                            "1", "--outputs", str(path))
    assert code == 2
    assert err == (f"error: --outputs {path}: this is an offline plan (`trainyard plan --json`), "
                   f"whose values are placeholders; {HINT}\n")


@pytest.mark.parametrize("overrides, message", [
    ({"checkpointsBucket": "[secret]"}, "checkpointsBucket is a secret ([secret]); the job "
                                        "cannot use it"),
    ({"checkpointsBucket": "trainyard-prod-checkpoints-3e2133cc82cf270e78fb"},
     "checkpointsBucket 'trainyard-prod-checkpoints-3e2133cc82cf270e78fb' is a placeholder"),
    ({"trainingRuntimes": None}, "no `trainingRuntimes` output"),
    ({"checkpointsBucket": None}, "no `checkpointsBucket` output; pass --checkpoint-dir"),
])
def test_unusable_outputs_are_refused(capsys, tmp_path, overrides, message):
    path = write_outputs(tmp_path / "o.json", **overrides)
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "1",
                            "--team", "research", "--outputs", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"error: --outputs {path}: {message}"), err
    assert err.count("\n") == 1


def test_a_pool_not_yet_deployed_or_changed_since_is_refused(capsys, tmp_path):
    runtimes = deployed_outputs("prod")["trainingRuntimes"]
    del runtimes["h100"]
    path = write_outputs(tmp_path / "o.json", trainingRuntimes=runtimes)
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "h100", "--nodes", "1",
                            "--team", "research", "--outputs", str(path))
    assert code == 2
    assert err == ("error: --pool h100: the deployed stack has no runtime for it "
                   "(trainingRuntimes: a100, eval-spot, g-spot); deploy the stack config first "
                   "(`pulumi up`)\n")
    path = write_outputs(tmp_path / "o.json", trainingRuntimes={**runtimes, "h100": "torch-h100"})
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "h100", "--nodes", "1",
                            "--team", "research", "--outputs", str(path))
    assert code == 2
    assert err == ("error: --pool h100: the deployed runtime is 'torch-h100' but the stack config "
                   "gives 'torch-efa-h100': the config changed since the last deploy; deploy it "
                   "first (`pulumi up`)\n")


@pytest.mark.parametrize("image, problem", [
    ("registry/trainyard-train:latest", "uses the moving tag :latest; pin a version tag or digest"),
    ("registry/trainyard-train", "needs a version tag or digest"),
])
def test_image_must_be_pinned_like_the_stack_config(capsys, image, problem):
    code, out, err = render(capsys, "llm", *BASE, "--pool", "a100", "--nodes", "1",
                            "--image", image)
    assert code == 2 and out == ""
    assert err.startswith(f"error: --image {image}: {problem}"), err


def test_json_output_and_workload_flags(capsys, prod_outputs):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "1",
                            "--team", "applied", "--outputs", str(prod_outputs), "-o", "json",
                            "--preset", "1b", "--max-steps", "5000", "--seed", "3",
                            "--nccl-debug", "INFO", "--image", "123.dkr.ecr/train:v1")
    assert code == 0, err
    job = json.loads(out)
    t = trainer(job)
    args = dict(zip(t["args"][::2], t["args"][1::2], strict=True))
    assert (args["--preset"], args["--max-steps"], args["--seed"]) == ("1b", "5000", "3")
    assert t["image"] == "123.dkr.ecr/train:v1"
    assert {"name": "NCCL_DEBUG", "value": "INFO"} in t["env"]


# ----------------------------------------------------------------------------------------------
# A non-EFA pool
# ----------------------------------------------------------------------------------------------
def test_non_efa_job_has_no_efa_or_huge_pages_and_may_take_part_of_a_node(capsys):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "eval-spot", "--nodes",
                            "1", "--team", "research", "--gpus-per-node", "2",
                            "--micro-batch-size", "16", "--checkpoint-dir", "/shared/ckpt/eval")
    assert code == 0, err
    job = yaml.safe_load(out)
    jobspec.validate_train_job(job)
    assert job["spec"]["runtimeRef"]["name"] == "torch-eval-spot"
    t = trainer(job)
    assert t["resourcesPerNode"]["limits"] == {
        "nvidia.com/gpu": "2", "memory": t["resourcesPerNode"]["requests"]["memory"]}
    assert t["numProcPerNode"] == 2
    assert t["args"][t["args"].index("--checkpoint-dir") + 1] == "/shared/ckpt/eval"


def test_dev_stack_single_team_needs_no_team_flag(capsys):
    code, out, err = render(capsys, "llm", "--stack", "dev", "--pool", "dev-spot", "--nodes", "2",
                            "--micro-batch-size", "16", "--checkpoint-dir", "s3://my-bucket/ckpt/")
    assert code == 0, err
    job = yaml.safe_load(out)
    assert job["metadata"]["namespace"] == "research"
    res = trainer(job)["resourcesPerNode"]
    assert res["limits"] == {"nvidia.com/gpu": "1", "memory": res["requests"]["memory"]}
    assert [v["persistentVolumeClaim"]["claimName"] for v in node_patch(job)["volumes"]] == \
        ["shared-efs"]  # dev has EFS, no FSx


# ----------------------------------------------------------------------------------------------
# On the team's Kueue queue, with the interruption budget: a Spot pool and a reserved pool
# ----------------------------------------------------------------------------------------------
def pod_template_patch(job):
    (patch,) = job["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return rjob["template"]["spec"]["template"]


def runtime_of(stack: str, pool: str) -> dict:
    from trainyard.synth import load_config

    return jobspec.cluster_training_runtime(jobspec.pool_facts(load_config(stack).pool(pool)),
                                            "img:1")


def assert_queued_with_budget(job: dict, namespace: str, priority: str) -> None:
    """What Kueue and an interruption need, whatever the pool."""
    from components.services.k8s_names import (
        DO_NOT_DISRUPT,
        LOCAL_QUEUE,
        PRIORITY_LABEL,
        QUEUE_LABEL,
        SPOT_NOTICE_SECONDS,
    )

    jobspec.validate_train_job(job)
    meta = job["metadata"]
    assert meta["namespace"] == namespace
    assert meta["labels"][QUEUE_LABEL] == LOCAL_QUEUE
    assert meta["labels"][PRIORITY_LABEL] == priority
    assert job["spec"]["suspend"] is True  # Kueue unsuspends it on admission
    template = pod_template_patch(job)
    assert template["metadata"]["annotations"] == {DO_NOT_DISRUPT: "true"}
    spec = template["spec"]
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    grace = spec["terminationGracePeriodSeconds"]
    env = {e["name"]: e["value"] for e in trainer(job)["env"]}
    shutdown = int(env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"])
    assert 0 < shutdown < grace <= SPOT_NOTICE_SECONDS
    assert (grace, shutdown) == (jobspec.BUDGET.grace_s, jobspec.BUDGET.shutdown_timeout_s)
    assert trainer(job)["command"][:3] == ["python", "-m", "workloads.common.launch"]


def assert_runtime_restarts_on_preemption(rt: dict) -> None:
    """Exit 75 or an evicted pod fails the Job by policy; JobSet restarts every node without
    counting it; any other failure restarts too, counted."""
    from components.services.k8s_names import DO_NOT_DISRUPT

    jobspec.validate_runtime(rt)
    jobset = rt["spec"]["template"]["spec"]
    (rule,) = jobset["failurePolicy"]["rules"]
    assert rule["action"] == "RestartJobSetAndIgnoreMaxRestarts"
    assert rule["onJobFailureReasons"] == ["PodFailurePolicy"]
    (rjob,) = jobset["replicatedJobs"]
    job_spec = rjob["template"]["spec"]
    assert job_spec["backoffLimit"] == 0
    rules = job_spec["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "node", "operator": "In",
                                                  "values": [75]}} in rules
    assert {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget",
                                                      "status": "True"}]} in rules
    pod = job_spec["template"]
    assert pod["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert pod["metadata"]["annotations"] == {DO_NOT_DISRUPT: "true"}
    assert pod["spec"]["terminationGracePeriodSeconds"] == jobspec.BUDGET.grace_s


def test_spot_job_is_queued_tolerates_the_pool_and_carries_the_budget(capsys, prod_outputs):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "g-spot", "--nodes", "2",
                            "--team", "applied", "--preset", "350m", "--outputs", str(prod_outputs))
    assert code == 0, err
    assert err == ""  # 350m (what fits an A10G) saves well inside the budget: no warning
    job = yaml.safe_load(out)
    assert_queued_with_budget(job, "applied", "training")
    assert job["metadata"]["labels"]["trainyard.io/pool"] == "g-spot"
    assert_runtime_restarts_on_preemption(runtime_of("prod", "g-spot"))


def test_reserved_pool_job_is_queued_the_same_way(capsys, prod_outputs):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "h100", "--nodes", "4",
                            "--team", "research", "--preset", "1b", "--priority", "production",
                            "--outputs", str(prod_outputs))
    assert code == 0, err
    job = yaml.safe_load(out)
    assert_queued_with_budget(job, "research", "production")
    assert job["spec"]["runtimeRef"]["name"] == "torch-efa-h100"
    assert_runtime_restarts_on_preemption(runtime_of("prod", "h100"))


@pytest.mark.parametrize("priority", ["production", "training", "preemptible"])
def test_every_priority_class_renders(capsys, priority):
    from components.services.k8s_names import PRIORITY_CLASSES, PRIORITY_LABEL

    assert priority in PRIORITY_CLASSES
    code, out, err = render(capsys, "llm", *BASE, "--pool", "eval-spot", "--nodes", "1",
                            "--preset", "350m", "--priority", priority)
    assert code == 0, err
    assert yaml.safe_load(out)["metadata"]["labels"][PRIORITY_LABEL] == priority


def test_unknown_priority_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        render(capsys, "llm", *BASE, "--pool", "eval-spot", "--nodes", "1", "--priority",
               "urgent")
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert "--priority" in err and "urgent" in err and "preemptible" in err
    assert err.count("\n") == 1


def test_a_save_that_cannot_fit_the_spot_budget_is_a_warning(capsys, monkeypatch):
    """The job still renders (it resumes from its last periodic checkpoint instead)."""
    from components.services import trainjob

    monkeypatch.setattr(trainjob, "BUDGET", trainjob.interruption_budget(notice_s=60))
    code, out, err = render(capsys, "llm", *BASE, "--pool", "eval-spot", "--nodes", "1",
                            "--preset", "1b", "--micro-batch-size", "2")  # fits an A10G
    assert code == 0 and yaml.safe_load(out)["kind"] == "TrainJob"
    assert err.startswith("warning: --preset 1b on Spot pool 'eval-spot': ") and \
        "may not fit the 30s torchrun waits after SIGTERM" in err and err.count("\n") == 1
    code, out, err = render(capsys, "llm", *BASE, "--pool", "a100", "--nodes", "1",
                            "--preset", "1b")
    assert code == 0 and err == ""  # on-demand: no Spot notice to fit


# ----------------------------------------------------------------------------------------------
# GPU memory: a job the trainer's own estimate says cannot fit the pool's GPUs is refused here,
# not admitted by Kueue and then refused by the trainer (exit 2) on the cluster
# ----------------------------------------------------------------------------------------------
DEV = ["--stack", "dev", "--checkpoint-dir", "s3://b/c/", "--pool", "dev-spot"]


def trainer_gib(preset: str, world: int, **flags) -> float:
    """What the trainer's memory check will estimate for one rank (workloads/llm/config.py)."""
    from workloads.llm.config import TrainConfig

    return TrainConfig(preset=preset, **flags).memory_estimate(world, True).total / 2**30


def test_125m_at_a_batch_too_large_for_an_a10g_is_refused_before_any_output(capsys):
    from trainyard.synth import load_config

    facts = jobspec.pool_facts(load_config("dev").pool("dev-spot"))
    assert facts.gpu_memory_gib == 24 and facts.gpu_model == "A10G-24GB"
    assert trainer_gib("125m", 1) < facts.gpu_memory_gib  # the default batch (16) fits
    need = trainer_gib("125m", 1, micro_batch_size=32)
    assert need > facts.gpu_memory_gib  # the trainer would refuse it on the node
    code, out, err = render(capsys, "llm", *DEV, "--nodes", "1", "--micro-batch-size", "32")
    assert code == 2 and out == ""
    assert err.startswith(f"error: --preset 125m: needs about {need:.1f} GiB per GPU ("), err
    assert "--micro-batch-size 32, 1 GPU) but pool 'dev-spot' (g5.xlarge/g6.xlarge) has 24 GiB " \
        "per GPU" in err
    assert err.rstrip().endswith("use --micro-batch-size 16 or --preset tiny")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("fix", [["--micro-batch-size", "16"], ["--preset", "tiny"]])
def test_the_suggested_fix_renders(capsys, fix):
    code, out, err = render(capsys, "llm", *DEV, "--nodes", "1", *fix)
    assert code == 0, err
    args = trainer(yaml.safe_load(out))["args"]
    assert args[args.index(fix[0]) + 1] == fix[1]
    flags = {"micro_batch_size": 16} if fix[0] == "--micro-batch-size" else {}
    assert trainer_gib(args[args.index("--preset") + 1], 1, **flags) <= 24


def test_fsdp_shares_the_states_over_every_rank_of_every_node(capsys):
    """The estimate is one rank's: weights, gradients and AdamW states divided over the GPUs
    that shard them. 1b needs 42.3 GiB on one GPU; 2 p4d nodes run HSDP (sharded within a node,
    replicated across nodes) at 23.9 GiB per rank on A100-40GB."""
    assert trainer_gib("1b", 1) > 40 > trainer_gib("1b", 16)
    code, out, err = render(capsys, "llm", *BASE, "--pool", "a100", "--nodes", "2",
                            "--preset", "1b")
    assert code == 0, err
    code, out, err = render(capsys, "llm", *BASE, "--pool", "eval-spot", "--nodes", "1",
                            "--preset", "1b")
    assert code == 2, err
    assert err.startswith(f"error: --preset 1b: needs about {trainer_gib('1b', 4):.1f} GiB per "
                          "GPU"), err
    assert "--micro-batch-size 4, sharded over 4 GPUs) but pool 'eval-spot'" in err


def test_a_vision_batch_too_large_for_the_gpu_is_refused(capsys):
    code, out, err = render(capsys, "vision", *DEV, "--nodes", "1", "--batch-size", "1024")
    assert code == 2 and out == ""
    assert err.startswith("error: --preset resnet50: needs about "), err
    assert "--batch-size 1024, 1 GPU) but pool 'dev-spot'" in err and \
        err.rstrip().endswith("use --batch-size 256 or --preset resnet18")
    code, out, err = render(capsys, "vision", *DEV, "--nodes", "1", "--batch-size", "256")
    assert code == 0, err


# ----------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the value
# ----------------------------------------------------------------------------------------------
BASE = ["--stack", "prod", "--team", "research", "--checkpoint-dir", "s3://b/c/"]


@pytest.mark.parametrize("argv, message", [
    (["llm", *BASE, "--pool", "a100", "--nodes", "20"],
     "--nodes 20: pool 'a100' allows at most 16 nodes"),
    (["llm", *BASE, "--pool", "a100", "--nodes", "0"], "--nodes 0: must be at least 1"),
    (["llm", *BASE, "--pool", "a100", "--nodes", "2", "--gpus-per-node", "16"],
     "--gpus-per-node 16: p4d.24xlarge has 8 GPUs per node (pool 'a100')"),
    (["llm", *BASE, "--pool", "a100", "--nodes", "2", "--gpus-per-node", "4"],
     "--gpus-per-node 4: EFA pool 'a100' runs whole nodes (8 GPUs): its EFA devices and huge "
     "pages are per node"),
    (["llm", *BASE, "--pool", "x100", "--nodes", "2"],
     "--pool x100: unknown pool in stack 'prod' (known: a100, h100, g-spot, eval-spot, inference)"),
    (["speech", *BASE, "--pool", "a100", "--nodes", "2"],
     "unknown workload 'speech' (known: llm, vision)"),
    (["llm", "--stack", "prod", "--team", "applied", "--checkpoint-dir", "s3://b/c/", "--pool",
      "a100", "--nodes", "5"],
     "--nodes 5: 5 nodes x 8 GPUs = 40 exceeds the GPU quota of team 'applied' (32)"),
    (["llm", *BASE[:2], "--pool", "a100", "--nodes", "2", "--checkpoint-dir", "s3://b/c/"],
     "--team is required: stack 'prod' has teams research, applied"),
    (["llm", *BASE[:2], "--team", "ops", "--pool", "a100", "--nodes", "2"],
     "--team ops: unknown team in stack 'prod' (known: research, applied)"),
    (["llm", *BASE[:4], "--checkpoint-dir", "/tmp/ckpt", "--pool", "a100", "--nodes", "2"],
     "--checkpoint-dir /tmp/ckpt: every node must see the same checkpoints; use s3://... or a "
     "path under a shared mount (/fsx, /shared)"),
    (["llm", *BASE, "--pool", "a100", "--nodes", "2", "--name", "Bad_Name"],
     "--name Bad_Name: not a valid TrainJob name (lowercase letters, digits and '-', starting "
     "with a letter, at most 63 characters)"),
    (["llm", *BASE, "--pool", "a100", "--nodes", "2", "--preset", "7b"],
     "--preset 7b: unknown preset (known: tiny, 125m, 350m, 1b, 8b)"),
    (["llm", "--stack", "nope", "--pool", "a100", "--nodes", "2"], "unknown stack 'nope'"),
    (["vision", *BASE, "--pool", "a100", "--nodes", "1", "--micro-batch-size", "64"],
     "--micro-batch-size 64: workload vision takes --batch-size"),
    (["llm", *BASE, "--pool", "a100", "--nodes", "1", "--micro-batch-size", "0"],
     "--micro-batch-size 0: must be >= 1"),
])
def test_bad_input_is_one_line_naming_the_value(capsys, argv, message):
    code, out, err = render(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_team_quota_below_one_node_of_the_pool_is_refused(capsys, tmp_path):
    from trainyard.synth import stack_path

    text = stack_path("prod").read_text().replace("gpuQuota: 32", "gpuQuota: 4")
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(text)
    code, out, err = render(capsys, "llm", "--stack-file", str(path), "--team", "applied",
                            "--pool", "a100", "--nodes", "1", "--checkpoint-dir", "s3://b/c/")
    assert code == 2
    assert err == ("error: --pool a100: one node takes 8 GPUs but team 'applied' has a GPU "
                   "quota of 4\n")


def test_outputs_of_another_stack_are_refused(capsys, prod_outputs):
    code, out, err = render(capsys, "llm", "--stack", "dev", "--pool", "dev-spot", "--nodes",
                            "1", "--outputs", str(prod_outputs))
    assert code == 2
    assert err == ("error: --pool dev-spot: the deployed stack has no runtime for it "
                   "(trainingRuntimes: a100, eval-spot, g-spot, h100); deploy the stack config "
                   "first (`pulumi up`)\n")


def test_missing_outputs_file_says_how_to_make_one(capsys, tmp_path):
    code, out, err = render(capsys, "llm", *BASE[:4], "--pool", "a100", "--nodes", "1",
                            "--outputs", str(tmp_path / "nope.json"))
    assert code == 2
    assert err == f"error: --outputs {tmp_path / 'nope.json'}: no such file; {HINT}\n"


def test_submit_without_a_kubeconfig_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, err = render(capsys, "llm", *BASE, "--pool", "a100", "--nodes", "1", "--submit")
    assert code == 2
    assert out == ""  # nothing printed before the kubeconfig is known to work
    assert err.startswith("error: --submit: no usable kubeconfig ($KUBECONFIG or "
                          "~/.kube/config)")
    assert err.count("\n") == 1


def test_submit_creates_the_trainjob_through_the_custom_objects_api(capsys, monkeypatch):
    import trainyard.job as job_cli

    created = {}

    class FakeApi:
        def create_namespaced_custom_object(self, group, version, namespace, plural, body):
            created.update(group=group, version=version, namespace=namespace, plural=plural,
                           name=body["metadata"]["name"])

    monkeypatch.setattr(job_cli, "connect", lambda kubeconfig, context: FakeApi())
    code, out, err = render(capsys, "llm", *BASE, "--pool", "a100", "--nodes", "1", "--submit")
    assert code == 0, err
    assert created == {"group": "trainer.kubeflow.org", "version": "v1alpha1",
                       "namespace": "research", "plural": "trainjobs", "name": "llm-a100-1n"}
    assert "submitted TrainJob research/llm-a100-1n" in err


def test_rendered_args_are_accepted_by_the_workloads_own_parser(capsys, prod_outputs):
    from workloads.llm.config import TrainConfig
    from workloads.llm.train import build_parser

    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "2",
                            "--team", "research", "--outputs", str(prod_outputs), "--preset", "350m",
                            "--data", "s3://datasets/stdlib")
    assert code == 0, err
    t = trainer(yaml.safe_load(out))
    assert t["command"][-2:] == ["-m", "workloads.llm.train"]
    cfg = TrainConfig(**vars(build_parser().parse_args(t["args"])))  # validates values too
    assert cfg.preset == "350m" and cfg.data == "s3://datasets/stdlib"
    assert cfg.checkpoint_dir.startswith(f"s3://{DEPLOYED_BUCKET}/")
    assert cfg.metrics_file == jobspec.metrics_file_path()


def test_vision_job_runs_the_vision_entry_point_with_its_own_defaults_and_presets(capsys,
                                                                                 prod_outputs):
    from workloads.vision.config import TrainConfig
    from workloads.vision.train import build_parser

    code, out, err = render(capsys, "vision", "--stack", "prod", "--pool", "eval-spot",
                            "--nodes", "1", "--team", "research", "--outputs", str(prod_outputs))
    assert code == 0, err
    job = yaml.safe_load(out)
    jobspec.validate_train_job(job)
    assert job["metadata"]["name"] == "vision-eval-spot-1n"
    assert job["metadata"]["labels"]["trainyard.io/workload"] == "vision"
    t = trainer(job)
    assert t["command"] == ["python", "-m", "workloads.common.launch", "--nproc-per-node", "4",
                            "-m", "workloads.vision.train"]
    cfg = TrainConfig(**vars(build_parser().parse_args(t["args"])))  # validates values too
    assert (cfg.preset, cfg.max_steps, cfg.checkpoint_every) == ("resnet50", 1000, 500)
    assert cfg.checkpoint_dir.startswith("s3://") and cfg.checkpoint_dir.endswith(
        "/research/vision-eval-spot-1n/")
    assert cfg.metrics_file == jobspec.metrics_file_path()

    code, out, err = render(capsys, "vision", *BASE, "--pool", "eval-spot", "--nodes", "1",
                            "--preset", "resnet18", "--data", "s3://datasets/imagenet-224")
    assert code == 0, err
    args = trainer(yaml.safe_load(out))["args"]
    assert args[args.index("--preset") + 1] == "resnet18"
    assert args[args.index("--data") + 1] == "s3://datasets/imagenet-224"
    code, out, err = render(capsys, "vision", *BASE, "--pool", "eval-spot", "--nodes", "1",
                            "--preset", "125m")
    assert code == 2 and out == ""
    assert err == "error: --preset 125m: unknown preset (known: tiny, resnet18, resnet50)\n"


# ----------------------------------------------------------------------------------------------
# Every `trainyard job render` example in the README and docs/ runs as written
# ----------------------------------------------------------------------------------------------
def doc_examples() -> list[tuple[str, str]]:
    """(where, command line) for every `trainyard job render` line of README.md and docs/*.md,
    continuation lines joined; prompts, redirections and comments are the reader's, not ours."""
    import re
    import shlex

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip().removeprefix("$ ")
            start = i
            if line.startswith("trainyard job render"):
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                words = shlex.split(line, comments=True)
                if ">" in words:
                    words = words[:words.index(">")]
                cmd = " ".join(shlex.quote(w) for w in words)
                assert not re.search(r"<\w+>", cmd), f"{path.name}:{start + 1}: placeholder {cmd}"
                found.append((f"{path.relative_to(root)}:{start + 1}", cmd))
            i += 1
    return found


DOC_EXAMPLES = doc_examples()


def test_the_docs_have_job_render_examples():
    where = {w.split(":")[0] for w, _ in DOC_EXAMPLES}
    assert {"README.md", "docs/workloads.md", "docs/monitoring.md"} <= where, DOC_EXAMPLES


@pytest.mark.parametrize("where, command", DOC_EXAMPLES, ids=[w for w, _ in DOC_EXAMPLES])
def test_doc_example_runs(capsys, tmp_path, monkeypatch, where, command):
    import shlex

    import trainyard.job as job_cli

    argv = shlex.split(command)[1:]  # drop `trainyard`
    stack = argv[argv.index("--stack") + 1]
    if "--outputs" in argv:  # the file `pulumi stack output --json > outputs.json` wrote
        argv[argv.index("--outputs") + 1] = str(write_outputs(tmp_path / "outputs.json", stack))
    if "--submit" in argv:
        monkeypatch.setattr(job_cli, "connect", lambda kubeconfig, context: type(
            "Api", (), {"create_namespaced_custom_object": lambda self, **kw: None})())
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, f"{where}: {command}\n{out.err}"
    job = yaml.safe_load(out.out)
    jobspec.validate_train_job(job)
    assert job["metadata"]["labels"]["trainyard.io/stack"] == stack


def test_an_inference_pool_is_refused(capsys):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "inference", "--nodes",
                            "1", "--team", "research", "--checkpoint-dir", "s3://b/ckpt/")
    assert code == 2 and out == ""
    assert "--pool inference: an inference pool" in err


def test_submit_from_a_pod_without_kubeconfig_uses_its_service_account(monkeypatch, tmp_path):
    """A notebook server has no kubeconfig: --submit uses the pod's token (in-cluster)."""
    from kubernetes import config as kube_config

    from trainyard import job

    calls = []
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.100.0.1")
    monkeypatch.setattr(kube_config, "load_incluster_config", lambda: calls.append("incluster"))
    api = job.connect(None, None)
    assert calls == ["incluster"] and type(api).__name__ == "CustomObjectsApi"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(job.UsageError, match="no usable kubeconfig"):
        job.connect(None, None)
