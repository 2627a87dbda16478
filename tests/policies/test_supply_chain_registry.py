"""Supply-chain rules on the committed stacks: clean stacks pass every ECR, image and secret
rule; a stack broken the way a PR would break it fails on the right resource."""

from __future__ import annotations

import pytest

from policies import by_name
from policies.supply_chain import from_stack_registry, split_image
from tests.conftest import STACKS
from trainyard.check import PolicyConfig, run_checks

MINE = ("ecr-scan-and-immutable-tags", "ecr-repository-kms", "ecr-lifecycle-policy",
        "workload-images-from-registry", "secretsmanager-customer-key",
        "k8s-secret-from-secret-store", "helm-trusted-repositories")
ECR = "aws:ecr/repository:Repository"
RUNTIME = "kubernetes:trainer.kubeflow.org/v1alpha1:ClusterTrainingRuntime"


def check(plan: dict, *names: str, config: dict | None = None):
    policies = [by_name()[n] for n in names]
    return run_checks(plan, PolicyConfig(source="test", properties=config or {}), policies)


def of_type(plan: dict, typ: str) -> list[dict]:
    return [r for r in plan["resources"] if r["type"] == typ]


@pytest.mark.parametrize("stack", STACKS)
def test_clean_stacks_pass(plan_for, stack):
    report = check(plan_for(stack), *MINE)
    assert not report.errors, report.errors
    assert not report.violations, report.violations
    assert not report.cannot_judge, report.cannot_judge


def test_prod_repositories_and_runtimes_are_what_the_rules_judge(plan_for):
    plan = plan_for("prod")
    names = {r["inputs"]["name"] for r in of_type(plan, ECR)}
    assert names == {"trainyard-train", "trainyard-serve"}
    images = {c["image"] for r in of_type(plan, RUNTIME)
              for j in r["inputs"]["spec"]["template"]["spec"]["replicatedJobs"]
              for c in j["template"]["spec"]["template"]["spec"]["containers"]}
    assert any("/trainyard-train:" in i for i in images)


def test_mutable_repository_fails_on_it(plan_for):
    plan = plan_for("prod")
    (train,) = [r for r in of_type(plan, ECR) if r["inputs"]["name"] == "trainyard-train"]
    train["inputs"]["imageTagMutability"] = "MUTABLE"
    report = check(plan, "ecr-scan-and-immutable-tags")
    assert [v["urn"] for v in report.violations] == [train["urn"]]
    assert "MUTABLE" in report.violations[0]["message"]


def test_training_image_from_elsewhere_fails_on_every_runtime(plan_for):
    plan = plan_for("prod")
    runtimes = of_type(plan, RUNTIME)
    for r in runtimes:
        for j in r["inputs"]["spec"]["template"]["spec"]["replicatedJobs"]:
            for c in j["template"]["spec"]["template"]["spec"]["containers"]:
                if "/trainyard-train:" in c["image"]:
                    c["image"] = "docker.io/pytorch/pytorch:2.8.0-cuda12.9-cudnn9-runtime"
    report = check(plan, "workload-images-from-registry")
    assert {v["urn"] for v in report.violations} == {r["urn"] for r in runtimes}
    assert all(v["level"] == "mandatory" for v in report.violations)
    # ... and an allow-listed organisation registry makes it pass again
    ok = check(plan, "workload-images-from-registry", config={
        "workload-images-from-registry": {"allowedImagePrefixes": [
            "docker.io/pytorch/", "public.ecr.aws/docker/library/"]}})
    assert not ok.violations


def test_repository_without_kms_fails(plan_for):
    plan = plan_for("dev")
    repo = of_type(plan, ECR)[0]
    repo["inputs"].pop("encryptionConfigurations")
    report = check(plan, "ecr-repository-kms")
    assert [v["urn"] for v in report.violations] == [repo["urn"]]


def test_split_image():
    assert split_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/a/b:1.0") == (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com", "a/b")
    assert split_image("localhost:5000/x@sha256:" + "0" * 64) == ("localhost:5000", "x")
    assert split_image("pytorch/pytorch:2.8") == ("", "pytorch/pytorch")
    assert split_image("python") == ("", "python")


def test_from_stack_registry_needs_host_and_name():
    url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainyard-train"
    assert from_stack_registry(f"{url}:1", [("trainyard-train", url)])
    assert not from_stack_registry(f"{url}-evil:1", [("trainyard-train", url)])
    # unknown URL (preview): any private ECR host with the repository's name
    assert from_stack_registry(f"{url}:1", [("trainyard-train", None)])
    assert not from_stack_registry("evil.example.com/trainyard-train:1",
                                   [("trainyard-train", None)])
