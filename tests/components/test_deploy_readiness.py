"""Deploy readiness (issue 11): each defect a deploy review found that would break a real
`pulumi up`, pinned on the config and on the synthesized plans."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from components.compute import eks_versions
from components.compute.addons import addon_configuration
from components.compute.cluster import deployer_ingress_rules
from components.compute.gpu_pool import initial_desired_size
from components.config import ClusterConfig, DeployerAccess, load
from tests.components.test_config import DELETE, mutate, problems, stack_raw
from tests.conftest import resources

NOV_27 = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def _problems_at(raw, stack, now):
    from components.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load(raw, stack, now=now)
    return e.value.problems


# -- 2. a private endpoint needs a declared deployer path -----------------------------------
def test_private_stack_without_deployer_access_is_refused():
    found = problems(mutate("prod", **{"trainyard:cluster/deployerAccess": DELETE}), "prod")
    assert found == ["trainyard:cluster.deployerAccess: is required when endpointPublicAccess is "
                     "false: name the CIDRs or security groups `pulumi up` runs from "
                     "(docs/operations.md \"First deploy\"); nothing else can reach a "
                     "private-only endpoint"]


def test_empty_deployer_access_is_refused():
    found = problems(mutate("prod", **{"trainyard:cluster/deployerAccess": {}}), "prod")
    assert len(found) == 1 and found[0].startswith("trainyard:cluster.deployerAccess: is required")


@pytest.mark.parametrize("access,expected", [
    ({"cidrs": ["0.0.0.0/0"]}, "trainyard:cluster.deployerAccess.cidrs[0]: '0.0.0.0/0' opens"),
    ({"cidrs": ["10.0.0.0/33"]}, "trainyard:cluster.deployerAccess.cidrs[0]: '10.0.0.0/33'"),
    ({"securityGroupIds": ["sg-xyz"]},
     "trainyard:cluster.deployerAccess.securityGroupIds[0]: 'sg-xyz' is not a security group id"),
    ({"cidr": ["10.0.0.0/24"]}, "trainyard:cluster.deployerAccess.cidr: unknown key"),
])
def test_bad_deployer_access_names_key_and_value(access, expected):
    found = problems(mutate("prod", **{"trainyard:cluster/deployerAccess": access}), "prod")
    assert any(p.startswith(expected) for p in found), found
    # one problem per bad value: the "is required" cross-check does not pile on
    assert not any("is required" in p for p in found), found


def test_deployer_rules_open_443_on_the_cluster_security_group(plan_for):
    plan = plan_for("prod")
    (cluster,) = resources(plan, "aws:eks/cluster:Cluster")
    sg = cluster["outputs"]["vpcConfig"]["clusterSecurityGroupId"]
    rules = [r for r in resources(plan, INGRESS) if r["inputs"]["securityGroupId"] == sg]
    assert [(r["inputs"]["ipProtocol"], r["inputs"]["fromPort"], r["inputs"]["toPort"],
             r["inputs"].get("cidrIpv4")) for r in rules] == [("tcp", 443, 443, "10.100.8.0/24")]
    assert rules[0]["inputs"]["description"]
    # Kubernetes objects wait for the rule, so destroy removes them before the path closes.
    k8s = [r for r in plan["resources"] if r["custom"] and r["type"].startswith("kubernetes:")]
    assert k8s and all(rules[0]["urn"] in r["dependencies"] for r in k8s)


def test_deployer_ingress_rules_pure():
    cfg = ClusterConfig(deployer_access=DeployerAccess(
        cidrs=("10.1.0.0/24", "2001:db8::/64"), security_group_ids=("sg-0123456789abcdef0",)))
    rules = deployer_ingress_rules(cfg)
    assert [r["slug"] for r in rules] == ["cidr-10-1-0-0-24", "cidr-2001-db8-64",
                                         "sg-0123456789abcdef0"]
    assert rules[0]["cidr_ipv4"] == "10.1.0.0/24" and rules[1]["cidr_ipv6"] == "2001:db8::/64"
    assert rules[2]["referenced_security_group_id"] == "sg-0123456789abcdef0"
    assert deployer_ingress_rules(ClusterConfig()) == []


def test_deploy_workflow_runs_prod_where_the_private_endpoint_is_reachable():
    import yaml

    from tests.test_workflows import WORKFLOWS

    doc = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())
    runs_on = doc["jobs"]["prod"]["runs-on"]
    assert isinstance(runs_on, list) and "self-hosted" in runs_on, runs_on
    text = (WORKFLOWS / "deploy.yml").read_text()
    assert "deployerAccess" in text  # the workflow says why it runs there


# -- 4. GPU health checks reach GPU nodes ----------------------------------------------------
def test_node_monitoring_agent_tolerates_gpu_taints(any_plan):
    (addon,) = [r for r in resources(any_plan, "aws:eks/addon:Addon")
                if r["inputs"]["addonName"] == "eks-node-monitoring-agent"]
    values = json.loads(addon["inputs"]["configurationValues"])
    tolerations = values["dcgmAgent"]["tolerations"]
    gpu_taints = {(t["key"], t["effect"]) for ng in resources(any_plan, "aws:eks/nodeGroup:NodeGroup")
                  for t in ng["inputs"].get("taints") or []}
    gpu_taints |= {(t["key"], t["effect"]) for np in resources(
        any_plan, "kubernetes:karpenter.sh/v1:NodePool")
        for t in np["inputs"]["spec"]["template"]["spec"].get("taints") or []}
    assert gpu_taints
    for key, _ in gpu_taints:
        assert any(t.get("operator") == "Exists" and t.get("key") in (None, key)
                   for t in tolerations), key


def test_every_csi_node_addon_tolerates_every_taint(plan_for):
    plan = plan_for("prod")
    csi = {r["inputs"]["addonName"]: r for r in resources(plan, "aws:eks/addon:Addon")
           if r["inputs"]["addonName"].endswith("csi-driver")}
    assert set(csi) == {"aws-ebs-csi-driver", "aws-efs-csi-driver", "aws-fsx-csi-driver"}
    for name, addon in csi.items():
        assert json.loads(addon["inputs"]["configurationValues"]) == \
            {"node": {"tolerations": [{"operator": "Exists"}]}}, name
    assert addon_configuration("coredns") is None


# -- 5. Kubernetes version lifecycle ---------------------------------------------------------
def test_default_version_is_in_standard_support_and_pinned():
    from components.compute.addons import addon_pins

    assert eks_versions.DEFAULT_VERSION in eks_versions.in_standard_support(NOV_27.date())
    assert addon_pins(eks_versions.DEFAULT_VERSION)
    assert ClusterConfig().kubernetes_version == eks_versions.DEFAULT_VERSION


@pytest.mark.parametrize("version,ok", [("1.33", False), ("1.34", True), ("1.35", True),
                                        ("1.36", True), ("1.32", False), ("1.31", False)])
def test_versions_past_standard_support_are_refused(version, ok):
    raw = mutate("dev", **{"trainyard:cluster/kubernetesVersion": version})
    if ok:
        assert load(raw, "dev", now=NOV_27).cluster.kubernetes_version == version
    else:
        (problem,) = _problems_at(raw, "dev", NOV_27)
        assert problem.startswith(f"trainyard:cluster.kubernetesVersion: '{version}' left EKS ")
        assert "1.36" in problem


def test_extended_support_opt_in():
    raw = mutate("dev", **{"trainyard:cluster/kubernetesVersion": "1.33",
                           "trainyard:cluster/supportType": "EXTENDED"})
    cfg = load(raw, "dev", now=NOV_27)
    assert cfg.cluster.support_type == "EXTENDED"
    # 1.31's extended support ended 2026-11-26: refused even with EXTENDED
    raw = mutate("dev", **{"trainyard:cluster/kubernetesVersion": "1.31",
                           "trainyard:cluster/supportType": "EXTENDED"})
    (problem,) = _problems_at(raw, "dev", NOV_27)
    assert "left EKS extended support on 2026-11-26" in problem
    # 1.34 leaves standard support on 2026-12-02: accepted the day before, refused on the day
    raw = mutate("dev", **{"trainyard:cluster/kubernetesVersion": "1.34"})
    load(raw, "dev", now=dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    _problems_at(raw, "dev", dt.datetime(2026, 12, 2, tzinfo=dt.UTC))


def test_upgrade_policy_follows_support_type(plan_for):
    (cluster,) = resources(plan_for("dev"), "aws:eks/cluster:Cluster")
    assert cluster["inputs"]["upgradePolicy"] == {"supportType": "STANDARD"}
    found = problems(mutate("dev", **{"trainyard:cluster/supportType": "FOREVER"}))
    assert found[0].startswith("trainyard:cluster.supportType: 'FOREVER'")


def test_calendar_is_consistent():
    for v in eks_versions.CALENDAR.values():
        assert v.eks_release < v.end_of_standard < v.end_of_extended
        months = (v.end_of_standard.year - v.eks_release.year) * 12 + \
            v.end_of_standard.month - v.eks_release.month
        assert months == 14, v.version  # EKS: 14 months of standard support


# -- 7. Capacity Blocks that start later -----------------------------------------------------
def _cb_raw(starts_at, **extra):
    return mutate("prod", **{"trainyard:gpuPools/1/capacityReservation/startsAt": starts_at,
                             **extra})


def test_future_capacity_block_pool_is_created_at_zero():
    cfg = load(_cb_raw("2026-12-15T11:30:00Z"), "prod", now=NOV_27)
    h100 = cfg.pool("h100")
    assert h100.capacity_reservation.starts_at == dt.datetime(2026, 12, 15, 11, 30,
                                                              tzinfo=dt.UTC)
    assert h100.desired_size == 4 and initial_desired_size(h100, NOV_27) == 0
    assert initial_desired_size(h100, dt.datetime(2026, 12, 16, tzinfo=dt.UTC)) == 4
    a100 = cfg.pool("a100")
    assert initial_desired_size(a100, NOV_27) == a100.desired_size


def test_yaml_timestamps_are_accepted():
    raw = _cb_raw(dt.datetime(2026, 12, 15, 11, 30))
    assert load(raw, "prod", now=NOV_27).pool("h100").capacity_reservation.starts_at.tzinfo


@pytest.mark.parametrize("changes,expected", [
    ({"trainyard:gpuPools/1/capacityReservation/startsAt": "next tuesday"},
     "trainyard:gpuPools[1].capacityReservation.startsAt: 'next tuesday' is not an ISO 8601"),
    ({"trainyard:gpuPools/1/capacityReservation/startsAt": "2026-12-15",
      "trainyard:gpuPools/1/minSize": 1},
     "trainyard:gpuPools[1].minSize: 1 must be 0: the Capacity Block starts 2026-12-15"),
])
def test_bad_capacity_block_start(changes, expected):
    found = _problems_at(mutate("prod", **changes), "prod", NOV_27)
    assert any(p.startswith(expected) for p in found), found


# -- 8. bootstrap admin ------------------------------------------------------------------------
@pytest.mark.parametrize("stack,expected", [("dev", True), ("staging", True), ("prod", False)])
def test_bootstrap_admin_default_per_environment(plan_for, stack, expected):
    assert load(stack_raw(stack), stack).cluster.bootstrap_creator_admin is expected
    (cluster,) = resources(plan_for(stack), "aws:eks/cluster:Cluster")
    assert cluster["inputs"]["accessConfig"]["bootstrapClusterCreatorAdminPermissions"] is expected


def test_without_bootstrap_admin_someone_must_be_admin():
    found = problems(mutate("prod", **{"trainyard:cluster/adminRoleArns": DELETE}), "prod")
    assert found == ["trainyard:cluster.adminRoleArns: is required when bootstrapCreatorAdmin is "
                     "false: name at least the role `pulumi up` runs as, or nothing can create "
                     "the Kubernetes objects"]
    raw = mutate("dev", **{"trainyard:cluster/bootstrapCreatorAdmin": False})
    assert problems(raw)[0].startswith("trainyard:cluster.adminRoleArns: is required")
