"""The compute rules judge the committed stacks' Karpenter NodePools and EC2NodeClasses, not only
their node groups: each stack passes as committed, and breaking one of its NodePools or
EC2NodeClasses the way the rule forbids is caught at that object. Fixtures of each rule:
fixtures_karpenter.py."""

from __future__ import annotations

import pytest

from policies import POLICIES, by_name
from trainyard.check import config_for, run_checks

NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
COMPUTE = ["allowed-instance-types", "spot-pool-diversified", "gpu-node-taint",
           "gpu-ami-type-match", "node-ami-container-optimized", "efa-interface-count",
           "efa-interface-layout", "launch-template-imdsv2", "launch-template-imds-hop-limit",
           "launch-template-encrypted-volumes", "efa-pool-single-subnet"]


def _check(plan: dict, names=COMPUTE):
    policies = [by_name()[n] for n in names]
    cfg, _ = config_for(plan, None, POLICIES)  # policies/config/<stack>.json, as `check` does
    return run_checks(plan, cfg, policies)


def _named(plan: dict, type_: str, name: str) -> dict:
    (found,) = [r for r in plan["resources"]
                if r["type"] == type_ and r["inputs"]["metadata"]["name"] == name]
    return found


def _both(res: dict, path: str, value) -> None:
    """Set spec.<path> (integer segments index lists) in a NodePool's / EC2NodeClass's inputs and
    outputs alike (resource rules read inputs, stack rules outputs)."""
    for side in ("inputs", "outputs"):
        node = res[side]["spec"]
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[leaf] = value


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_committed_stacks_pass_and_have_nodepools(plan_for, stack):
    plan = plan_for(stack)
    assert [r for r in plan["resources"] if r["type"] == NODEPOOL], stack
    report = _check(plan)
    assert not report.violations and not report.errors and not report.cannot_judge, \
        report.violations or report.errors or report.cannot_judge


def _violations(report, policy: str) -> set:
    return {v["urn"] for v in report.violations if v["policy"] == policy}


def test_a_dev_nodepool_with_p5_types_is_not_allowed(plan_for):
    plan = plan_for("dev")
    np = _named(plan, NODEPOOL, "dev-spot")
    reqs = [{"key": "node.kubernetes.io/instance-type", "operator": "In",
             "values": ["p5.48xlarge", "p5e.48xlarge"]},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]
    _both(np, "template.spec.requirements", reqs)
    report = _check(plan, ["allowed-instance-types"])
    assert _violations(report, "allowed-instance-types") == {np["urn"]}
    assert any("p5.48xlarge (family p5) is not allowed" in v["message"]
               for v in report.violations)


def test_a_gpu_nodepool_without_type_or_family_restriction_could_launch_anything(plan_for):
    plan = plan_for("dev")
    np = _named(plan, NODEPOOL, "dev-spot")
    _both(np, "template.spec.requirements",
          [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}])
    report = _check(plan, ["allowed-instance-types", "spot-pool-diversified"])
    assert {v["policy"] for v in report.violations} == {"allowed-instance-types",
                                                         "spot-pool-diversified"}


@pytest.mark.parametrize("policy, type_, pool, path, value", [
    ("gpu-node-taint", NODEPOOL, "g-spot", "template.spec.taints", []),
    ("spot-pool-diversified", NODEPOOL, "eval-spot", "template.spec.requirements",
     [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["g5.12xlarge"]},
      {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]),
    ("efa-interface-count", NODECLASS, "a100", "networkInterfaces",
     [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"},
      {"networkCardIndex": 0, "deviceIndex": 1, "interfaceType": "efa-only"}]),
    ("efa-interface-layout", NODECLASS, "g-spot", "networkInterfaces",
     [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa"}]),
    ("efa-pool-single-subnet", NODECLASS, "a100", "subnetSelectorTerms",
     [{"id": "subnet-5784bfd5a05026e0d"}, {"id": "subnet-58511971a0472b397"}]),
    ("launch-template-imdsv2", NODECLASS, "eval-spot", "metadataOptions.httpTokens", "optional"),
    ("launch-template-imds-hop-limit", NODECLASS, "eval-spot",
     "metadataOptions.httpPutResponseHopLimit", 4),
    ("launch-template-encrypted-volumes", NODECLASS, "g-spot",
     "blockDeviceMappings.0.ebs.encrypted", False),
    ("node-ami-container-optimized", NODECLASS, "a100", "amiSelectorTerms",
     [{"alias": "al2@latest"}]),
    ("gpu-ami-type-match", NODECLASS, "a100", "amiSelectorTerms",
     [{"alias": "windows2022@latest"}]),
])
def test_breaking_a_prod_nodepool_or_nodeclass_is_caught_there(plan_for, policy, type_, pool,
                                                               path, value):
    plan = plan_for("prod")
    res = _named(plan, type_, pool)
    _both(res, path, value)
    report = _check(plan, [policy])
    assert not report.errors, report.errors
    assert {v["urn"] for v in report.violations} == {res["urn"]}, report.violations
