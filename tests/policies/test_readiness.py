"""The readiness rules beyond their fixtures: IAM action matching, managed policies the pack
cannot read, preview unknowns, the plan's date and the EKS calendar, and what the rules say about
the committed stacks."""

from __future__ import annotations

from datetime import date, timedelta

import policy_fixtures  # noqa: F401 - first: it imports fixtures_readiness at its end
import pytest
from fixtures_readiness import (
    ACCOUNT,
    CLUSTER_SG,
    DENY_DESCRIBE,
    MINIMAL,
    NODEPOOL,
    PULL,
    WORKER,
    api_rule,
    autoscaler,
    node_stack,
    pool,
    private_cluster,
    role_policy,
    versioned,
)
from policy_fixtures import IN, SG, R, doc
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policies import by_name
from policies.eks_versions import CALENDAR, in_standard_support, minor, next_in_standard_support
from policies.managed_policies import AWS_MANAGED_ACTIONS, aws_managed_name
from policies.readiness import (
    ATTACHMENT,
    NODE_ACTIONS,
    POLICY,
    Statement,
    action_matches,
    plan_date,
)
from trainyard.check import PolicyConfig, run_checks


def _check(name: str, resources: list, config: dict | None = None):
    cfg = PolicyConfig(source="test", properties={name: config} if config else {})
    return run_checks({"stack": "test", "resources": resources}, cfg, [by_name()[name]])

# ----------------------------------------------------------------------------------------------
# IAM evaluation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern,action,hit", [
    ("ec2:DescribeInstances", "ec2:DescribeInstances", True),
    ("EC2:describeinstances", "ec2:DescribeInstances", True),   # IAM actions ignore case
    ("ec2:Describe*", "ec2:DescribeInstances", True),
    ("ecr:*", "ecr:BatchGetImage", True),
    ("*", "ecr:GetAuthorizationToken", True),
    ("ec2:Describe?nstances", "ec2:DescribeInstances", True),
    ("ec2:Describe", "ec2:DescribeInstances", False),
    ("ec2:*Images", "ec2:DescribeInstances", False),
    ("ecr:*", "ec2:DescribeInstances", False),
    ("ec2:[D]escribeInstances", "ec2:DescribeInstances", False),  # no fnmatch classes in IAM
])
def test_action_matching(pattern, action, hit):
    assert action_matches(pattern, action) is hit

def test_not_action_covers_everything_else():
    st = Statement("Allow", ("iam:*",), True, "x")
    assert st.covers("ec2:DescribeInstances") and not st.covers("iam:PassRole")

def test_managed_policy_table():
    assert aws_managed_name("arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy") == \
        "AmazonEKSWorkerNodePolicy"
    assert aws_managed_name("arn:aws-us-gov:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy") \
        == "AmazonEBSCSIDriverPolicy"
    assert aws_managed_name(f"arn:aws:iam::{ACCOUNT}:policy/AmazonEKSWorkerNodePolicy") is None
    # The facts the deploy review learned: Minimal lacks DescribeInstances, PullOnly pulls.
    assert "ec2:DescribeInstances" in AWS_MANAGED_ACTIONS["AmazonEKSWorkerNodePolicy"]
    assert AWS_MANAGED_ACTIONS["AmazonEKSWorkerNodeMinimalPolicy"] == {
        "eks-auth:AssumeRoleForPodIdentity"}
    ecr = {a for a in NODE_ACTIONS if a.startswith("ecr:")}
    assert ecr <= AWS_MANAGED_ACTIONS["AmazonEC2ContainerRegistryPullOnly"]
    assert ecr <= AWS_MANAGED_ACTIONS["AmazonEC2ContainerRegistryReadOnly"]

def test_unknown_managed_policy_with_missing_actions_is_cannot_judge():
    report = _check("node-role-can-bootstrap",
                    node_stack(MINIMAL, PULL, f"arn:aws:iam::{ACCOUNT}:policy/elsewhere"))
    assert not report.violations and not report.errors
    [cj] = report.cannot_judge
    assert "node role node attaches arn:aws:iam::123456789012:policy/elsewhere" in cj["message"]
    assert "ec2:DescribeInstances" in cj["message"]

def test_unknown_managed_policy_is_irrelevant_when_nothing_is_missing():
    report = _check("node-role-can-bootstrap",
                    node_stack(WORKER, PULL, "AmazonSomeFuturePolicy"))
    assert not report.violations and not report.cannot_judge and not report.errors

def test_deny_is_reported_even_beside_an_unknown_policy():
    report = _check("node-role-can-bootstrap", node_stack(
        WORKER, PULL, f"arn:aws:iam::{ACCOUNT}:policy/elsewhere",
        extra=[role_policy("node", DENY_DESCRIBE)]))
    assert [v["message"].split(":")[0] for v in report.violations] == [
        "node role node denies ec2"]

def test_roles_that_no_node_uses_are_not_judged():
    report = _check("node-role-can-bootstrap", node_stack(WORKER, PULL) + [
        R("aws:iam/role:Role", "ci", {}, outputs={"arn": "arn:aws:iam::1:role/ci",
                                                 "name": "ci"})])
    assert not report.violations

def _opts():
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])

def _res(r, props, deps=None):
    return PolicyResource(r["type"], unknown_checking_proxy(props), r["urn"], r["name"], _opts(),
                          None, None, [], deps or {})

def _validate(name, resources, config=None):
    seen = []
    by_name()[name].validate(StackValidationArgs(resources, config or {}),
                             lambda m, u=None: seen.append((m, u)))
    return seen

def test_attachment_of_a_policy_not_created_yet_follows_its_dependency():
    """Fresh preview: the customer policy's arn is unknown; the attachment's property dependency
    still names the policy, whose document the rule then reads."""
    role = node_stack()[0]
    ng = node_stack()[1]
    policy = R(POLICY, "boot", {})
    att = R(ATTACHMENT, "boot-att", {})
    grants = doc({"Effect": "Allow", "Resource": "*",
                  "Action": ["ec2:DescribeInstances", "ecr:GetAuthorizationToken",
                             "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]})
    pol = _res(policy, {"arn": UNKNOWN_STRING_VALUE, "policy": grants})
    resources = [_res(role, {**role["inputs"], **role["outputs"]}),
                 _res(ng, {**ng["inputs"]}), pol,
                 _res(att, {"role": "node-name", "policyArn": UNKNOWN_STRING_VALUE},
                      deps={"policyArn": [pol]})]
    assert _validate("node-role-can-bootstrap", resources) == []
    without_deps = resources[:3] + [_res(att, {"role": "node-name",
                                               "policyArn": UNKNOWN_STRING_VALUE})]
    with pytest.raises(UnknownValueError):
        _validate("node-role-can-bootstrap", without_deps)

# ----------------------------------------------------------------------------------------------
# Reachability
# ----------------------------------------------------------------------------------------------
def _preview_cluster():
    cluster = private_cluster()
    vpc = dict(cluster["inputs"]["vpcConfig"], clusterSecurityGroupId=UNKNOWN_STRING_VALUE)
    return cluster, _res(cluster, {**cluster["inputs"], "vpcConfig": vpc})

def test_preview_rule_on_the_unknown_cluster_group_follows_property_dependencies():
    cluster, c = _preview_cluster()
    rule = api_rule()
    props = dict(rule["inputs"], securityGroupId=UNKNOWN_STRING_VALUE)
    assert _validate("eks-private-endpoint-reachable",
                     [c, _res(rule, props, deps={"securityGroupId": [c]})]) == []
    other = _res(R(SG, "other", {}), {"id": "sg-other"})
    seen = _validate("eks-private-endpoint-reachable",
                     [c, other, _res(rule, props, deps={"securityGroupId": [other]})])
    assert [u for _, u in seen] == [cluster["urn"]]

def test_preview_rule_with_no_dependencies_is_cannot_judge():
    _, c = _preview_cluster()
    rule = api_rule()
    with pytest.raises(UnknownValueError):
        _validate("eks-private-endpoint-reachable",
                  [c, _res(rule, dict(rule["inputs"], securityGroupId=UNKNOWN_STRING_VALUE))])

def test_cluster_group_missing_from_the_plan_is_cannot_judge_not_a_pass():
    cluster = private_cluster()
    del cluster["inputs"]["vpcConfig"]["clusterSecurityGroupId"]
    del cluster["outputs"]["vpcConfig"]["clusterSecurityGroupId"]
    report = _check("eks-private-endpoint-reachable", [cluster, api_rule()])
    assert not report.violations and not report.errors
    assert "vpcConfig.clusterSecurityGroupId" in report.cannot_judge[0]["message"]

def test_an_open_rule_is_reported_even_beside_a_real_path():
    report = _check("eks-private-endpoint-reachable", [
        private_cluster(), api_rule(), api_rule("api-open", cidrIpv4="0.0.0.0/0")])
    assert [v["urn"].rsplit("::", 1)[-1] for v in report.violations] == ["api-open"]

def test_referenced_group_that_is_not_the_cluster_group_counts():
    report = _check("eks-private-endpoint-reachable", [
        private_cluster(), R(IN, "from-peer", {"securityGroupId": CLUSTER_SG, "ipProtocol": "-1",
                                              "referencedSecurityGroupId": "sg-peer"})])
    assert not report.violations

# ----------------------------------------------------------------------------------------------
# Capacity
# ----------------------------------------------------------------------------------------------
def test_pool_without_pool_label_is_named_by_its_node_group():
    report = _check("gpu-pool-scale-from-zero", [pool("bare", labels={})])
    assert "pool 'bare'" in report.violations[0]["message"]

def test_autoscaler_for_another_cluster_does_not_count():
    report = _check("gpu-pool-scale-from-zero", [pool(), autoscaler(discover="other-cluster")])
    assert "autoDiscovery.clusterName=cluster-name" in report.violations[0]["message"]

def test_nodepool_token_is_what_a_custom_resource_gets():
    from policies.readiness import KARPENTER_NODEPOOL

    assert KARPENTER_NODEPOOL == NODEPOOL

@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_committed_stacks_scale_every_pool_from_zero(plan_for, managed_plan_for, stack):
    """As committed, Karpenter serves every elastic pool: nothing to report. Planned with every
    pool as a managed node group (and so nothing that scales them), the rule reports exactly the
    min-0 node groups that are not Capacity Blocks."""
    rule = [by_name()["gpu-pool-scale-from-zero"]]
    report = run_checks(plan_for(stack), PolicyConfig(), rule)
    assert not report.violations and not report.cannot_judge and not report.errors
    plan = managed_plan_for(stack)
    plan["resources"] = [r for r in plan["resources"]
                         if "karpenter" not in str(r["inputs"].get("chart", ""))
                         and not r["type"].startswith("kubernetes:karpenter")]
    expected = {r["urn"] for r in plan["resources"]
                if r["type"] == "aws:eks/nodeGroup:NodeGroup"
                and r["inputs"]["scalingConfig"]["minSize"] == 0
                and r["inputs"].get("capacityType") != "CAPACITY_BLOCK"}
    report = run_checks(plan, PolicyConfig(), rule)
    assert expected and {v["urn"] for v in report.violations} == expected


# ----------------------------------------------------------------------------------------------
# Lifecycle
# ----------------------------------------------------------------------------------------------
def test_plan_date_is_today_unless_configured():
    assert plan_date({"asOf": ""}) == date.today()
    assert plan_date({}) == date.today()
    assert plan_date({"asOf": "2027-01-31"}) == date(2027, 1, 31)
    with pytest.raises(ValueError, match="expected an ISO date"):
        plan_date({"asOf": "next tuesday"})

def test_bad_as_of_is_a_policy_error():
    report = _check("eks-version-in-standard-support", versioned("1.34"),
                    {"asOf": "27/11/2026"})
    assert report.errors and "asOf" in report.errors[0]["message"]

def test_extended_support_is_accepted_until_its_end():
    end = CALENDAR["1.33"].end_of_extended
    for day, ok in ((end - timedelta(days=1), True), (end, False)):
        report = _check("eks-version-in-standard-support", versioned("1.33", "EXTENDED"),
                        {"asOf": day.isoformat()})
        assert (not report.violations) is ok, (day, report.violations)

def test_version_unknown_at_preview_is_cannot_judge():
    [cluster] = versioned("1.34")
    cluster["inputs"]["version"] = UNKNOWN_STRING_VALUE
    report = _check("eks-version-in-standard-support", [cluster], {"asOf": "2026-11-27"})
    assert report.cannot_judge and not report.violations

def test_calendar_follows_the_eks_rule_and_the_deploy_review():
    # AWS_FACTS.md, "Learned from the 2026-11 deploy review".
    reviewed = {"1.32": date(2026, 3, 23), "1.33": date(2026, 7, 29),
                "1.34": date(2026, 12, 2), "1.35": date(2027, 3, 27)}
    for v, end in reviewed.items():
        assert CALENDAR[v].end_of_standard == end, v
    for v, e in CALENDAR.items():
        months = lambda a, b: (b.year - a.year) * 12 + b.month - a.month  # noqa: E731
        assert months(e.released, e.end_of_standard) == 14, v
        assert months(e.end_of_standard, e.end_of_extended) == 12, v
        assert e.end_of_standard.day == e.end_of_extended.day, v

def test_version_helpers():
    assert minor("1.33") == "1.33" and minor("v1.33.4") == "1.33" and minor("latest") is None
    nov_27 = date(2026, 11, 27)
    assert in_standard_support(nov_27) == ["1.34", "1.35", "1.36", "1.37"]
    assert next_in_standard_support("1.33", nov_27) == "1.34"
    assert next_in_standard_support("1.31", date(2027, 1, 1)) == "1.35"

