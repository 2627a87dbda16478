"""Workload identity: the exact IAM actions and resources of every storage workload policy, the
Pod Identity trust, the associations and the FSx CSI driver's add-on role."""

from __future__ import annotations

import json
import re

import pytest

from components.services import identity
from components.storage import fsx
from tests.conftest import STACKS, resources, storage_unit_plan

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
ADDON = "aws:eks/addon:Addon"
ACCOUNT = "123456789012"


def role_named(plan: dict, suffix: str) -> dict:
    (role,) = [r for r in resources(plan, ROLE) if r["name"].endswith(suffix)]
    return role


def policy_of(plan: dict, role: dict) -> dict:
    (pol,) = [r for r in resources(plan, ROLE_POLICY) if r["inputs"]["role"] == role["id"]]
    return json.loads(pol["inputs"]["policy"])


def arns(plan: dict) -> dict[str, str]:
    buckets = {r["inputs"]["tags"]["trainyard.io/bucket-role"]: r["outputs"]["arn"]
               for r in resources(plan, "aws:s3/bucket:Bucket")}
    (key,) = [r for r in resources(plan, "aws:kms/key:Key") if "storage" in r["name"]]
    return {**buckets, "key": key["outputs"]["arn"]}


def expected_training_statements(a: dict[str, str]) -> list[dict]:
    return [
        {"Sid": "ListDatasets", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": a["datasets"]},
        {"Sid": "ReadDatasets", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": f"{a['datasets']}/*"},
        {"Sid": "ListCheckpoints", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": a["checkpoints"],
         "Condition": {"StringLike": {"s3:prefix": ["checkpoints/", "checkpoints/*"]}}},
        {"Sid": "ReadWriteCheckpoints", "Effect": "Allow",
         "Action": ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                    "s3:ListMultipartUploadParts", "s3:PutObject"],
         "Resource": f"{a['checkpoints']}/checkpoints/*"},
        {"Sid": "UseStorageKeyThroughS3", "Effect": "Allow",
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": a["key"],
         "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}},
    ]


def assert_no_wildcards(doc: dict, allowed_star_actions: tuple[str, ...] = ()) -> None:
    for s in doc["Statement"]:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        res = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert not any("*" in a for a in actions), s
        if "*" in res:
            assert set(actions) <= set(allowed_star_actions), s
        assert s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s


# ----------------------------------------------------------------------------------------------
# committed stacks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_training_policy_exact(plan_for, stack):
    plan = plan_for(stack)
    doc = policy_of(plan, role_named(plan, "-training"))
    assert doc == {"Version": "2012-10-17", "Statement": expected_training_statements(arns(plan))}
    assert_no_wildcards(doc)
    # the access-log bucket is never reachable from pods
    assert arns(plan)["access-logs"] not in json.dumps(doc)


@pytest.mark.parametrize("stack", STACKS)
def test_training_role_trust_is_pod_identity(plan_for, stack):
    plan = plan_for(stack)
    trust = json.loads(role_named(plan, "-training")["inputs"]["assumeRolePolicy"])
    (s,) = trust["Statement"]
    assert s["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert s["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert s["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    clusters = resources(plan, "aws:eks/cluster:Cluster")
    if clusters:  # once the cluster layer exists, the trust names it
        assert s["Condition"]["ArnEquals"] == {"aws:SourceArn": clusters[0]["outputs"]["arn"]}


@pytest.mark.parametrize("stack", STACKS)
def test_every_storage_iam_policy_is_scoped(plan_for, stack):
    plan = plan_for(stack)
    storage_roles = {r["id"] for r in resources(plan, ROLE) if "-storage-" in r["name"]}
    pols = [r for r in resources(plan, ROLE_POLICY) if r["inputs"]["role"] in storage_roles]
    assert pols
    for p in pols:
        assert_no_wildcards(json.loads(p["inputs"]["policy"]),
                            allowed_star_actions=("fsx:DescribeFileSystems",))


@pytest.mark.parametrize("stack", STACKS)
def test_associations_per_team_once_cluster_exists(plan_for, stack):
    plan = plan_for(stack)
    assocs = resources(plan, ASSOCIATION)
    storage_assocs = [a for a in assocs if "-storage-" in a["name"]]
    clusters = resources(plan, "aws:eks/cluster:Cluster")
    namespaces = [r for r in resources(plan, "kubernetes:core/v1:Namespace")
                  if r["inputs"]["metadata"].get("labels", {}).get("trainyard.io/team")]
    if not clusters or not namespaces:
        pytest.skip("cluster/teams layer not in this plan yet (covered by the unit plan below)")
    role = role_named(plan, "-training")
    teams = {n["inputs"]["metadata"]["name"] for n in namespaces}
    assert {a["inputs"]["namespace"] for a in storage_assocs} == teams
    for a in storage_assocs:
        assert a["inputs"]["serviceAccount"] == "trainer"
        assert a["inputs"]["roleArn"] == role["outputs"]["arn"]
        assert a["inputs"]["clusterName"] == clusters[0]["outputs"]["name"]


# ----------------------------------------------------------------------------------------------
# unit plan: Storage with a stand-in cluster (prod config: FSx on, two teams)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unit():
    return storage_unit_plan("prod", teams=("research", "applied"))


def test_unit_associations(unit):
    role = role_named(unit, "-training")
    assocs = {a["inputs"]["namespace"]: a for a in resources(unit, ASSOCIATION)}
    assert set(assocs) == {"research", "applied"}
    ns_urns = {r["inputs"]["metadata"]["name"]: r["urn"]
               for r in resources(unit, "kubernetes:core/v1:Namespace")}
    for team, a in assocs.items():
        assert a["inputs"] == {**a["inputs"], "clusterName": "unit-cluster",
                               "serviceAccount": "trainer", "roleArn": role["outputs"]["arn"]}
        assert ns_urns[team] in a["dependencies"]
    trust = json.loads(role["inputs"]["assumeRolePolicy"])
    assert trust["Statement"][0]["Condition"]["ArnEquals"] == {
        "aws:SourceArn": f"arn:aws:eks:us-east-1:{ACCOUNT}:cluster/unit-cluster"}
    assert policy_of(unit, role)["Statement"] == expected_training_statements(arns(unit))


def test_unit_fsx_csi_addon_and_role(unit):
    (addon,) = resources(unit, ADDON)
    i = addon["inputs"]
    assert i["addonName"] == "aws-fsx-csi-driver" and i["clusterName"] == "unit-cluster"
    assert i["addonVersion"] == fsx.FSX_CSI_ADDON_VERSION
    assert re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", i["addonVersion"])
    role = role_named(unit, "-fsx-csi")
    assert i["podIdentityAssociations"] == [{"roleArn": role["outputs"]["arn"],
                                             "serviceAccount": "fsx-csi-controller-sa"}]
    assert policy_of(unit, role) == {"Version": "2012-10-17", "Statement": [
        {"Sid": "DescribeFileSystems", "Effect": "Allow", "Action": ["fsx:DescribeFileSystems"],
         "Resource": "*"}]}
    trust = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}


def test_no_cluster_no_associations_or_addon():
    plan = storage_unit_plan("prod", with_cluster=False)
    assert resources(plan, ASSOCIATION) == [] and resources(plan, ADDON) == []
    assert not [r for r in plan["resources"] if r["type"].startswith("kubernetes:")]
    trust = json.loads(role_named(plan, "-training")["inputs"]["assumeRolePolicy"])
    assert "ArnEquals" not in trust["Statement"][0]["Condition"]


# ----------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------
def test_training_policy_pure():
    doc = json.loads(identity.training_policy("arn:aws:s3:::d", "arn:aws:s3:::c",
                                              "arn:aws:kms:eu-west-1:1:key/k", "eu-west-1"))
    assert doc["Statement"] == expected_training_statements(
        {"datasets": "arn:aws:s3:::d", "checkpoints": "arn:aws:s3:::c",
         "key": "arn:aws:kms:eu-west-1:1:key/k"})[:4] + [
        {"Sid": "UseStorageKeyThroughS3", "Effect": "Allow",
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "arn:aws:kms:eu-west-1:1:key/k",
         "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}}]
    for bad in ("/checkpoints/", "checkpoints"):
        with pytest.raises(ValueError):
            identity.training_policy("a", "b", "k", "r", checkpoint_prefix=bad)


def test_trust_policy_pure():
    with_cluster = json.loads(identity.pod_identity_trust_policy("1", "arn:aws:eks:r:1:cluster/c"))
    assert with_cluster["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "1"},
        "ArnEquals": {"aws:SourceArn": "arn:aws:eks:r:1:cluster/c"}}
    assert identity.cluster_arn("aws-us-gov", "us-gov-west-1", "1", "c") == \
        "arn:aws-us-gov:eks:us-gov-west-1:1:cluster/c"


def test_fsx_service_linked_role_pure():
    assert fsx.fsx_s3_service_linked_role_arn("aws", "1", "fs-0a") == (
        "arn:aws:iam::1:role/aws-service-role/s3.data-source.lustre.fsx.amazonaws.com/"
        "AWSServiceRoleForFSxS3Access_fs-0a")
