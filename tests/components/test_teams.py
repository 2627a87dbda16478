"""Team namespaces: Pod Security labels, GPU quota, LimitRange, NetworkPolicies, the training
service account; and the config check on quotas below one node's GPUs."""

from __future__ import annotations

import copy

import pytest

from components.config import ConfigError, TeamConfig, load
from components.services.k8s_names import TRAINING_SERVICE_ACCOUNT
from components.services.teams import (
    limit_range_limits,
    max_accelerators_per_node,
    network_policies,
    quota_hard,
)
from tests.conftest import resources
from trainyard import jobspec
from trainyard.synth import read_stack_file, stack_path

NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def in_namespace(plan, type_, ns):
    return {r["inputs"]["metadata"]["name"]: r for r in resources(plan, type_)
            if r["inputs"]["metadata"].get("namespace") == ns}


@pytest.fixture(scope="module")
def prod(plan_for):
    return plan_for("prod")


# ----------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------
# The GPU quota is what the team's Kueue ClusterQueue can admit (nominal + borrowing: every team
# may borrow all 248 prod GPUs), never less (components/services/kueue.py, policy team-quota-admits-queue).
@pytest.mark.parametrize("team, quota", [("research", "248"), ("applied", "248")])
def test_prod_team_namespace_objects(prod, team, quota):
    ns = next(r for r in resources(prod, "kubernetes:core/v1:Namespace")
              if r["inputs"]["metadata"]["name"] == team)
    labels = ns["inputs"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["trainyard.io/team"] == team

    (quota_obj,) = in_namespace(prod, "kubernetes:core/v1:ResourceQuota", team).values()
    assert quota_obj["inputs"]["spec"]["hard"] == {"requests.nvidia.com/gpu": quota}

    (limits,) = in_namespace(prod, "kubernetes:core/v1:LimitRange", team).values()
    (limit,) = limits["inputs"]["spec"]["limits"]
    assert limit["type"] == "Container"
    assert limit["max"] == {"nvidia.com/gpu": "8"}  # the largest prod node has 8 GPUs
    assert "default" not in limit  # a default limit would cap training containers' memory

    sa = in_namespace(prod, "kubernetes:core/v1:ServiceAccount", team)[TRAINING_SERVICE_ACCOUNT]
    assert sa["inputs"]["automountServiceAccountToken"] is False

    policies = {n: r for n, r in in_namespace(prod, NETPOL, team).items()
                if "Teams" in r["urn"]}  # the Notebooks component adds its own (notebook pods)
    assert set(policies) == {"default-deny", "allow-dns", "allow-same-namespace",
                             "allow-monitoring-scrape", "allow-https-egress",
                             "allow-pod-identity-agent"}
    for obj in [quota_obj, limits, sa, *policies.values()]:
        assert ns["urn"] in obj["dependencies"]
    assert ns["dependencies"], "namespaces wait for the cluster (and are deleted before it)"


def test_team_quota_covers_every_accelerator_vendor_of_the_stack():
    from components.compute.catalog import load_catalog
    from components.config import GpuPoolConfig

    pools = [GpuPoolConfig(name=n, instance_types=(t,), capacity_type="ON_DEMAND", min_size=0,
                           desired_size=0, max_size=1, availability_zones=("us-east-1a",))
             for n, t in (("a", "p4d.24xlarge"), ("b", "trn1.32xlarge"), ("c", "g5.xlarge"))]
    per_node = max_accelerators_per_node(pools, load_catalog())
    assert per_node == {"nvidia.com/gpu": 8, "aws.amazon.com/neuron": 16}
    assert quota_hard(TeamConfig("t", 16), list(per_node)) == {
        "requests.aws.amazon.com/neuron": "16", "requests.nvidia.com/gpu": "16"}
    assert limit_range_limits({})[0] == {"type": "Container",
                                         "defaultRequest": {"cpu": "100m", "memory": "256Mi"}}


# ----------------------------------------------------------------------------------------------
# NetworkPolicies (pure)
# ----------------------------------------------------------------------------------------------
def test_network_policies_deny_by_default_then_allow_what_training_needs():
    port = jobspec.exporter()["port"]
    pols = network_policies("monitoring", port)
    assert list(pols)[0] == "default-deny"
    assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = pols["allow-dns"]["egress"][0]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    same = pols["allow-same-namespace"]
    assert same["ingress"] == [{"from": [{"podSelector": {}}]}]
    assert same["egress"] == [{"to": [{"podSelector": {}}]}]
    scrape = pols["allow-monitoring-scrape"]["ingress"][0]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert scrape["ports"] == [{"protocol": "TCP", "port": port}]
    https = pols["allow-https-egress"]["egress"][0]
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]
    agent = pols["allow-pod-identity-agent"]["egress"][0]
    assert agent["to"] == [{"ipBlock": {"cidr": "169.254.170.23/32"}}]


# ----------------------------------------------------------------------------------------------
# Config: a quota below one node of every pool
# ----------------------------------------------------------------------------------------------
def raw(stack):
    return copy.deepcopy(read_stack_file(stack_path(stack), stack))


def test_quota_below_one_node_of_every_pool_is_a_config_error():
    cfg = raw("prod")
    cfg["trainyard:teams"][1]["gpuQuota"] = 2
    with pytest.raises(ConfigError) as e:
        load(cfg, "prod")
    assert e.value.problems == [
        "trainyard:teams[1].gpuQuota: 2 is below one node of every GPU pool (the smallest, "
        "'eval-spot', has 4 GPUs per node); TrainJobs take whole nodes, so team 'applied' "
        "could never run one"]


def test_quota_of_one_node_of_the_smallest_pool_is_accepted():
    cfg = raw("prod")
    cfg["trainyard:teams"][1]["gpuQuota"] = 4
    assert load(cfg, "prod").teams[1].gpu_quota == 4
    assert load(raw("dev"), "dev").teams[0].gpu_quota == 2  # 1-GPU nodes


def test_quota_check_is_reported_by_the_plan_cli(tmp_path, capsys):
    from trainyard.cli import main

    text = stack_path("staging").read_text().replace("gpuQuota: 16", "gpuQuota: 4")
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(text)
    assert main(["plan", "--stack-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trainyard:teams[0].gpuQuota: 4 is below one node")
