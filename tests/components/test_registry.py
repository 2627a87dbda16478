"""The stack's ECR repositories (components/services/registry.py) and `trainyard:registry`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.compute.cluster import NODE_POLICIES
from components.config import RegistryConfig, load
from components.services.registry import (
    ImageRegistry,
    ImageRegistryArgs,
    enhanced_scanning_rules,
    lifecycle_policy,
)
from tests.conftest import STACKS, resources, section_problems, stack_raw, synthesize_program

ROOT = Path(__file__).resolve().parents[2]
ECR = "aws:ecr/repository:Repository"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
SCANNING = "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration"


def raw() -> dict:
    return stack_raw("dev")


def problems(section) -> list[str]:
    return section_problems("dev", "registry", section)


# -- config ----------------------------------------------------------------------------------
def test_defaults_when_the_section_is_absent():
    cfg = raw()
    cfg.pop("trainyard:registry", None)
    c = load(cfg, "dev").registry
    assert c == RegistryConfig()
    assert dict(c.repositories) == {"train": "trainyard-train", "serve": "trainyard-serve"}
    assert (c.scanning, c.keep_untagged, c.enabled) == ("basic", 10, True)


@pytest.mark.parametrize("section,expected", [
    ({"scanning": "deep"}, "trainyard:registry.scanning: 'deep' is not one of basic, enhanced"),
    ({"keepUntagged": 0}, "trainyard:registry.keepUntagged: 0 is below the minimum 1"),
    ({"repositories": {"train": "Bad_Name"}}, "trainyard:registry.repositories.train: "
                                              "'Bad_Name' is not a valid ECR repository name"),
    ({"repositories": {"Train": "x1"}}, "trainyard:registry.repositories.Train: role must be"),
    ({"repositories": {"a": "same", "b": "same"}},
     "trainyard:registry.repositories: two roles name the same repository ['same']"),
    ({"repositories": []}, "trainyard:registry.repositories: expected a mapping"),
    ({"retention": 3}, "trainyard:registry.retention: unknown key"),
])
def test_bad_config_is_one_line_naming_the_key(section, expected):
    (problem,) = problems(section)
    assert problem.startswith(expected), problem
    assert "\n" not in problem


# -- pure decisions --------------------------------------------------------------------------
def test_lifecycle_expires_only_untagged_beyond_n():
    (rule,) = json.loads(lifecycle_policy(7))["rules"]
    assert rule["selection"] == {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                                 "countNumber": 7}
    assert rule["action"] == {"type": "expire"}
    with pytest.raises(ValueError):
        lifecycle_policy(0)


def test_enhanced_rules_cover_exactly_the_repositories():
    (rule,) = enhanced_scanning_rules({"serve": "b", "train": "a"})
    assert rule["scan_frequency"] == "CONTINUOUS_SCAN"
    assert [f["filter"] for f in rule["repository_filters"]] == ["a", "b"]


def test_nodes_can_pull_without_kms_permissions():
    # ECR decrypts through its own grant on the key; nodes need only the pull-only policy.
    assert "AmazonEC2ContainerRegistryPullOnly" in NODE_POLICIES


# -- the component under the mock runtime ----------------------------------------------------
def _plan(config: RegistryConfig, key=None, retain=False) -> dict:
    def program():
        ImageRegistry("unit-registry", ImageRegistryArgs(config=config, key_arn=key,
                                                         retain_on_delete=retain,
                                                         tags={"owner": "t"}))
    return synthesize_program(program)


def test_repositories_are_immutable_scanned_encrypted_with_the_key():
    key = "arn:aws:kms:us-east-1:123456789012:key/k"
    plan = _plan(RegistryConfig(), key=key)
    repos = {r["inputs"]["name"]: r for r in resources(plan, ECR)}
    assert set(repos) == {"trainyard-train", "trainyard-serve"}
    for r in repos.values():
        i = r["inputs"]
        assert i["imageTagMutability"] == "IMMUTABLE"
        assert i["imageScanningConfiguration"] == {"scanOnPush": True}
        assert i["encryptionConfigurations"] == [{"encryptionType": "KMS", "kmsKey": key}]
        assert i["forceDelete"] is False
    lcs = resources(plan, LIFECYCLE)
    assert sorted(lc["inputs"]["repository"] for lc in lcs) == sorted(repos)
    assert resources(plan, SCANNING) == []
    urns = {r["name"] for r in resources(plan, ECR)}
    assert urns == {"unit-registry-train", "unit-registry-serve"}  # role-based logical names


def test_without_a_key_ecr_uses_its_aws_managed_key():
    plan = _plan(RegistryConfig(repositories={"train": "t1"}))
    (r,) = resources(plan, ECR)
    assert r["inputs"]["encryptionConfigurations"] == [{"encryptionType": "KMS"}]


def test_enhanced_scanning_is_registry_wide_and_continuous():
    plan = _plan(RegistryConfig(scanning="enhanced"))
    (s,) = resources(plan, SCANNING)
    assert s["inputs"]["scanType"] == "ENHANCED"
    (rule,) = s["inputs"]["rules"]
    assert rule["scanFrequency"] == "CONTINUOUS_SCAN"
    assert {f["filter"] for f in rule["repositoryFilters"]} == {"trainyard-train",
                                                                "trainyard-serve"}


@pytest.mark.parametrize("stack", STACKS)
def test_stacks_export_repository_urls_matching_the_training_image(plan_for, stack):
    plan = plan_for(stack)
    urls = plan["outputs"]["imageRepositories"]
    assert set(urls) == {"train", "serve"}
    image = [r for r in resources(plan, "kubernetes:trainer.kubeflow.org/v1alpha1:"
                                        "ClusterTrainingRuntime")]
    assert image, "every stack has training runtimes"
    assert any(urls["train"] + ":" in json.dumps(r["inputs"]) for r in image)


def test_stack_repositories_use_the_storage_key(plan_for):
    prod = plan_for("prod")
    (key,) = [k for k in resources(prod, "aws:kms/key:Key") if k["name"] == "trainyard-storage-key"]
    for r in resources(prod, ECR):
        assert r["inputs"]["encryptionConfigurations"][0]["kmsKey"] == key["outputs"]["arn"]
