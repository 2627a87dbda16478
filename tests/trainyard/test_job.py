"""`trainyard job render`: TrainJobs from workload config + pool facts + stack outputs, validated
against kubeflow-trainer-api; bad input is one line naming the value, exit 2."""

from __future__ import annotations

import json

import pytest
import yaml

from trainyard import jobspec
from trainyard.cli import main

PROD_OUTPUTS = {"checkpointsBucket": "trainyard-prod-checkpoints-abc", "checkpointPrefix":
                "checkpoints/", "sharedClaimName": "shared-efs"}


@pytest.fixture()
def prod_plan(tmp_path):
    path = tmp_path / "prod.json"
    path.write_text(json.dumps({"project": "trainyard", "stack": "prod", "resources": [],
                                "outputs": PROD_OUTPUTS}))
    return path


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
                                                                                  prod_plan):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "2",
                            "--team", "research", "--plan", str(prod_plan))
    assert code == 0, err
    job = yaml.safe_load(out)
    jobspec.validate_train_job(job)
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"] == {"name": "llm-a100-2n", "namespace": "research", "labels": {
        "trainyard.io/workload": "llm", "trainyard.io/pool": "a100", "trainyard.io/stack": "prod"}}
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime",
                                         "name": "torch-efa-a100"}
    t = trainer(job)
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 8
    per_node = {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "4", "hugepages-2Mi": "5120Mi"}
    assert t["resourcesPerNode"]["limits"] == per_node
    assert {k: t["resourcesPerNode"]["requests"][k] for k in per_node} == per_node
    assert t["command"] == ["torchrun", "--nproc-per-node", "8", "-m", "workloads.llm.train"]
    args = dict(zip(t["args"][::2], t["args"][1::2], strict=True))
    checkpoint = "s3://trainyard-prod-checkpoints-abc/checkpoints/research/llm-a100-2n/"
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


def test_checkpoint_location_comes_from_the_synthesized_stack(capsys, monkeypatch, plan_for):
    import trainyard.synth

    calls = []

    def fake_synthesize(stack, stack_file=None):
        calls.append(stack)
        return plan_for(stack)  # the session's cached offline plan: same function, once

    monkeypatch.setattr(trainyard.synth, "synthesize", fake_synthesize)
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "h100", "--nodes", "4",
                            "--team", "research", "--name", "run-7")
    assert code == 0, err
    outputs = plan_for("prod")["outputs"]
    args = trainer(yaml.safe_load(out))["args"]
    assert args[args.index("--checkpoint-dir") + 1] == \
        f"s3://{outputs['checkpointsBucket']}/{outputs['checkpointPrefix']}research/run-7/"
    assert calls == ["prod"]
    assert trainer(yaml.safe_load(out))["resourcesPerNode"]["limits"][
        "vpc.amazonaws.com/efa"] == "32"


def test_json_output_and_workload_flags(capsys, prod_plan):
    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "1",
                            "--team", "applied", "--plan", str(prod_plan), "-o", "json",
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
                            "--checkpoint-dir", "/shared/ckpt/eval")
    assert code == 0, err
    job = yaml.safe_load(out)
    jobspec.validate_train_job(job)
    assert job["spec"]["runtimeRef"]["name"] == "torch-eval-spot"
    t = trainer(job)
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "2"}
    assert t["numProcPerNode"] == 2
    assert t["args"][t["args"].index("--checkpoint-dir") + 1] == "/shared/ckpt/eval"


def test_dev_stack_single_team_needs_no_team_flag(capsys):
    code, out, err = render(capsys, "llm", "--stack", "dev", "--pool", "dev-spot", "--nodes", "2",
                            "--checkpoint-dir", "s3://my-bucket/ckpt/")
    assert code == 0, err
    job = yaml.safe_load(out)
    assert job["metadata"]["namespace"] == "research"
    assert trainer(job)["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "1"}
    assert [v["persistentVolumeClaim"]["claimName"] for v in node_patch(job)["volumes"]] == \
        ["shared-efs"]  # dev has EFS, no FSx


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
     "--pool x100: unknown pool in stack 'prod' (known: a100, h100, g-spot, eval-spot)"),
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
     "--preset 7b: unknown preset (known: tiny, 125m, 350m, 1b)"),
    (["llm", "--stack", "nope", "--pool", "a100", "--nodes", "2"], "unknown stack 'nope'"),
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


def test_missing_checkpoint_output_asks_for_a_checkpoint_dir(capsys, tmp_path):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"stack": "prod", "outputs": {}}))
    code, out, err = render(capsys, "llm", *BASE[:4], "--pool", "a100", "--nodes", "1",
                            "--plan", str(plan))
    assert code == 2
    assert err == "error: the stack has no `checkpointsBucket` output; pass --checkpoint-dir\n"


def test_plan_of_another_stack_is_refused(capsys, prod_plan):
    code, out, err = render(capsys, "llm", "--stack", "dev", "--pool", "dev-spot", "--nodes",
                            "1", "--plan", str(prod_plan))
    assert code == 2
    assert err == f"error: --plan {prod_plan}: a plan of stack 'prod', not 'dev'\n"


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


def test_rendered_args_are_accepted_by_the_workloads_own_parser(capsys, prod_plan):
    from workloads.llm.config import TrainConfig
    from workloads.llm.train import build_parser

    code, out, err = render(capsys, "llm", "--stack", "prod", "--pool", "a100", "--nodes", "2",
                            "--team", "research", "--plan", str(prod_plan), "--preset", "350m",
                            "--data", "s3://datasets/stdlib")
    assert code == 0, err
    t = trainer(yaml.safe_load(out))
    assert t["command"][-2:] == ["-m", "workloads.llm.train"]
    cfg = TrainConfig(**vars(build_parser().parse_args(t["args"])))  # validates values too
    assert cfg.preset == "350m" and cfg.data == "s3://datasets/stdlib"
    assert cfg.checkpoint_dir.startswith("s3://trainyard-prod-checkpoints-abc/")
    assert cfg.metrics_file == jobspec.metrics_file_path()


def test_vision_job_runs_the_vision_entry_point_with_its_own_defaults_and_presets(capsys):
    from workloads.vision.config import TrainConfig
    from workloads.vision.train import build_parser

    code, out, err = render(capsys, "vision", "--stack", "prod", "--pool", "eval-spot",
                            "--nodes", "1", "--team", "research")
    assert code == 0, err
    job = yaml.safe_load(out)
    jobspec.validate_train_job(job)
    assert job["metadata"]["name"] == "vision-eval-spot-1n"
    assert job["metadata"]["labels"]["trainyard.io/workload"] == "vision"
    t = trainer(job)
    assert t["command"] == ["torchrun", "--nproc-per-node", "4", "-m", "workloads.vision.train"]
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
